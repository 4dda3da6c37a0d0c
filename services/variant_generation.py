"""Generating variants (the `augment` job's work): for train-split sources, filter them, store them as pending.

Three phases, so that no database transaction is open while a model runs: read the sources and index the
val/test texts (read-only sessions; the texts stream through the index, which keeps their anchors); generate
and filter in batches, reporting progress (done/total, kept, dropped per filter), each batch's content hashes
looked up in the database (a short read-only session per batch, never the dataset's every hash in memory);
then insert the kept variants and mark the job succeeded in one transaction (the caller's `finish`), so a crash
or a lost lease leaves no half-written output.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from core.settings import get_settings
from db.augmentation import (
    NewVariant,
    SourceRow,
    existing_hashes,
    insert_variants,
    reference_texts,
)
from db.datasets import get_dataset
from db.session import readonly_engine, session_scope
from services.augmentation import load_sources
from workers.augment.catalog import validate_request
from workers.augment.filters import CandidateFilter
from workers.augment.params import METHOD_PARAMS, FilterParams, parse

log = logging.getLogger("augloop.augment")

TEXTS_PER_CALL = 64  # sources per augmenter call: the augmenters bucket the rows of one call by length


def _chunks(items: Sequence[SourceRow], size: int) -> list[Sequence[SourceRow]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class BadJobParams(ValueError):
    """The job's stored parameters are malformed (a retry cannot fix them)."""


ReportFn = Callable[..., None]
FinishFn = Callable[[Session, dict[str, Any]], None]


def _read_phase(engine: Engine, dataset_name: str, items: list[dict[str, int]]) -> tuple[Any, list[SourceRow]]:
    with Session(bind=readonly_engine(engine), expire_on_commit=False) as session, session.begin():
        dataset = get_dataset(session, dataset_name)
        sources = load_sources(session, dataset, [int(item["sample_id"]) for item in items])
        return dataset, sources


def _filter_for(engine: Engine, dataset_id: int, params: FilterParams) -> CandidateFilter:
    """The job's filter: the val/test texts streamed once into its leak index, the dataset's hashes asked for
    batch by batch."""
    reading = readonly_engine(engine)

    def known(digests: Sequence[str]) -> set[str]:
        with Session(bind=reading) as session, session.begin():
            return existing_hashes(session, dataset_id, digests)

    with Session(bind=reading) as session, session.begin():
        return CandidateFilter(known, reference_texts(session, dataset_id), params)


def generate_variants(
    engine: Engine,
    job_id: int,
    params: dict[str, Any],
    *,
    report: ReportFn,
    finish: FinishFn,
    created_by: int | None = None,
) -> dict[str, Any]:
    """Run one augment job: `report(done=, total=, **counters)` per batch; `finish(session, result)` inside
    the transaction that inserts the kept variants. Raises BadJobParams, DomainError or ModelUnavailable for
    what a retry cannot fix."""
    settings = get_settings()
    try:
        items = [{"sample_id": int(i["sample_id"]), "n": int(i["n"])} for i in params["items"]]
        if not items or any(not 1 <= i["n"] <= 1000 for i in items):
            raise ValueError("items must name sources with 1 to 1000 variants each")
        seed = int(params.get("seed", 0))
        dataset, sources = _read_phase(engine, params["dataset"], items)
        checked = validate_request(
            list(params["methods"]), dataset.language, params.get("params"), params.get("filters"), settings
        )
    except (KeyError, TypeError, ValueError) as err:
        raise BadJobParams(f"malformed augment job parameters: {err}") from err

    language = checked["language"]
    counts = {item["sample_id"]: item["n"] for item in items}
    methods: list[str] = checked["methods"]
    total = sum(counts.values()) * len(methods)
    candidate_filter = _filter_for(engine, dataset.id, parse(FilterParams, checked["filters"]))
    not_generated = 0
    done = 0
    kept: list[NewVariant] = []
    per_method: dict[str, dict[str, int]] = {}

    def progress(**extra: Any) -> None:
        report(
            done=done,
            total=total,
            kept=len(kept),
            dropped={**candidate_filter.counts(), "no_candidate": not_generated},
            **extra,
        )

    progress(method=methods[0])
    from workers.augment.models import get_augmenter  # the ML stack loads in the worker only

    for method in methods:
        augmenter = get_augmenter(method, language, settings)
        method_params = parse(METHOD_PARAMS[method], checked["params"][method])
        kept_before = len(kept)
        generated = 0
        for chunk in _chunks(sources, TEXTS_PER_CALL):
            wanted = [counts[s.sample_id] for s in chunk]
            produced = augmenter.augment(
                [s.text for s in chunk], wanted, seed=seed, language=language, params=method_params
            )
            pairs = [
                (source, variant)
                for source, variants in zip(chunk, produced, strict=True)
                for variant in variants
            ]
            verdicts = candidate_filter.check([(source.text, variant.text) for source, variant in pairs])
            for (source, variant), verdict in zip(pairs, verdicts, strict=True):
                if verdict.keep:
                    kept.append(
                        NewVariant(
                            parent_id=source.sample_id,
                            text=variant.text,
                            content_hash=verdict.content_hash,
                            method=method,
                            method_params={**variant.params, "variant_index": variant.variant_index},
                            model_name=variant.model_name,
                            seed=seed,
                            similarity=verdict.similarity,
                            scores={**verdict.scores, **variant.details, "edits": variant.edits},
                        )
                    )
            generated += len(pairs)
            not_generated += sum(wanted) - len(pairs)
            done += sum(wanted)
            progress(method=method)
        per_method[method] = {"generated": generated, "kept": len(kept) - kept_before}

    with session_scope(engine) as session:
        ids, raced = insert_variants(session, dataset.id, job_id, kept, created_by)
        dropped = candidate_filter.counts()
        # Stored meanwhile (another job, a concurrent commit): the unique index skipped them, a duplicate like any.
        dropped["duplicate"] = dropped.get("duplicate", 0) + raced
        result = {
            "dataset": dataset.name,
            "methods": methods,
            "seed": seed,
            "requested": total,
            "generated": total - not_generated,
            "kept": len(ids),
            "inserted": len(ids),
            "dropped": {**dropped, "no_candidate": not_generated},
            "duplicate_at_insert": raced,
            "per_method": per_method,
            "variant_ids": ids[:1000],
            "plan_id": params.get("plan_id"),
        }
        report(done=done, total=total, kept=len(ids), dropped=result["dropped"])
        finish(session, result)
    log.info("augment job %s: %s of %s candidates kept", job_id, len(ids), total)
    return result
