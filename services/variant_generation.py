"""Generating variants (the `augment` job's work): for train-split sources, filter them, store them as pending.

Three phases, so that no database transaction is open while a model runs: read the sources, protected terms,
guidelines and settings, and index the val/test and training texts (read-only sessions; the texts stream
through the indexes, which keep their anchors); generate, filter and score in batches, reporting progress
(done/total, kept, dropped per filter), each batch's content hashes looked up in the database (a short
read-only session per batch, never the dataset's every hash in memory); then insert the kept variants, apply
the automatic decisions and mark the job succeeded in one transaction (the caller's `finish`), so a crash or a
lost lease leaves no half-written output.

Scoring before review: every kept variant gets its semantic similarity to its source (the sentence encoder,
when it can load; `min_semantic_similarity` above 0 requires it) and its novelty against the training texts;
when a run or ensemble has finished for the dataset, its label model scores each variant (consistency, flag),
the dataset's settings may send confident label changes straight to rejection, and an active auto-approval
rule approves (or sets aside for audit) the variants it covers.
"""

from __future__ import annotations

import logging
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from core.settings import get_settings
from db.augmentation import (
    AutomaticDecision,
    NewVariant,
    SourceRow,
    delete_inserted,
    existing_hashes,
    insert_variants,
    inserted_ids,
    record_automatic_decisions,
    reference_texts,
    texts_in_order,
    training_rows,
)
from db.auth import automatic_reviewer
from db.chunks import chunked
from db.datasets import get_dataset
from db.session import readonly_engine, session_scope
from services import auto_approval
from services.access import shown_provenance
from services.augmentation import load_sources
from services.protected_terms import protected_for
from services.variant_scoring import LabelModel, label_model_for
from services.variant_settings import AUTO_REJECT_REASON, VariantSettings, locked_settings, variant_settings
from workers.augment.base import SourceHints
from workers.augment.catalog import validate_request
from workers.augment.filters import CandidateFilter
from workers.augment.params import METHOD_PARAMS, FilterParams, parse
from workers.augment.textspans import ProtectedTerms

log = logging.getLogger("augloop.augment")

TEXTS_PER_CALL = 64  # sources per augmenter call: the augmenters bucket the rows of one call by length


class BadJobParams(ValueError):
    """The job's stored parameters are malformed (a retry cannot fix them)."""


ReportFn = Callable[..., None]
FinishFn = Callable[[Session, dict[str, Any]], None]


@dataclass
class JobInputs:
    """Everything the job reads before any model runs (a short read-only transaction)."""

    dataset: Any
    sources: list[SourceRow]
    hints: dict[str, Any]
    settings: VariantSettings
    label_model: LabelModel | None


def _read_phase(engine: Engine, dataset_name: str, items: list[dict[str, int]]) -> JobInputs:
    with Session(bind=readonly_engine(engine), expire_on_commit=False) as session, session.begin():
        dataset = get_dataset(session, dataset_name)
        sources = load_sources(session, dataset, [int(item["sample_id"]) for item in items])
        settings = variant_settings(dataset)
        return JobInputs(
            dataset=dataset,
            sources=sources,
            hints={
                "protected": protected_for(session, dataset),
                "guidelines": dataset.guidelines or "",
                "tasks": list(dataset.tasks),
            },
            settings=settings,
            label_model=label_model_for(session, dataset, settings.label_model_id),
        )


def _encoder(filters: FilterParams, settings: Any) -> tuple[Any, str | None]:
    """The sentence encoder, or (None, why) where it cannot load; a job that filters on meaning needs it."""
    from workers.augment.models import ModelUnavailable, get_sentence_encoder

    try:
        return get_sentence_encoder(settings), None
    except ModelUnavailable as err:
        if filters.min_semantic_similarity > 0:
            raise ModelUnavailable(f"min_semantic_similarity needs the sentence encoder: {err}") from err
        return None, str(err)


def _filter_for(engine: Engine, dataset_id: int, params: FilterParams, encoder: Any) -> CandidateFilter:
    """The job's filter: the val/test and training texts streamed once into its indexes, the dataset's hashes
    asked for batch by batch."""
    reading = readonly_engine(engine)

    def known(digests: Sequence[str]) -> set[str]:
        with Session(bind=reading) as session, session.begin():
            return existing_hashes(session, dataset_id, digests)

    # The training texts are indexed as they stream by and not kept: the novelty index reads back by id the
    # few that candidates come close to (at a million rows, the texts would be the largest thing in memory).
    training_ids = array("q")

    def training_texts(session: Session) -> Iterator[str]:
        for sample_id, text in training_rows(session, dataset_id):
            training_ids.append(sample_id)
            yield text

    def training_texts_of(positions: np.ndarray) -> list[str]:
        with Session(bind=reading) as session, session.begin():
            return texts_in_order(session, [training_ids[i] for i in positions.tolist()])

    with Session(bind=reading) as session, session.begin():
        return CandidateFilter(
            known,
            reference_texts(session, dataset_id),
            params,
            training_texts=training_texts(session),
            training_texts_of=training_texts_of,
            encoder=encoder,
        )


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
        inputs = _read_phase(engine, params["dataset"], items)
        checked = validate_request(
            list(params["methods"]),
            inputs.dataset.language,
            params.get("params"),
            params.get("filters"),
            settings,
        )
    except (KeyError, TypeError, ValueError) as err:
        raise BadJobParams(f"malformed augment job parameters: {err}") from err

    dataset, sources = inputs.dataset, inputs.sources
    language = checked["language"]
    counts = {item["sample_id"]: item["n"] for item in items}
    methods: list[str] = checked["methods"]
    total = sum(counts.values()) * len(methods)
    filters = parse(FilterParams, checked["filters"])
    encoder, no_encoder = _encoder(filters, settings)
    candidate_filter = _filter_for(engine, inputs.dataset.id, filters, encoder)
    not_generated = 0
    done = 0
    kept: list[NewVariant] = []
    kept_labels: list[dict[str, str]] = []
    per_method: dict[str, dict[str, int]] = {}

    def progress(within: int = 0, **extra: Any) -> None:
        report(
            done=done + within,
            total=total,
            kept=len(kept),
            dropped={**candidate_filter.counts(), "no_candidate": not_generated},
            **extra,
        )

    progress(method=methods[0])
    from workers.augment.models import get_augmenter  # the ML stack loads in the worker only

    # Every method's augmenter loads before any generates: a model that cannot load fails the job at once,
    # not after the methods before it spent minutes on variants that its failure throws away.
    augmenters = {method: get_augmenter(method, language, settings) for method in methods}
    for method in methods:
        augmenter = augmenters[method]
        method_params = parse(METHOD_PARAMS[method], checked["params"][method])
        kept_before = len(kept)
        generated = 0
        for chunk in chunked(sources, TEXTS_PER_CALL):
            wanted = [counts[s.sample_id] for s in chunk]
            hints = SourceHints(labels=[s.labels for s in chunk], **inputs.hints)
            asked = sum(wanted)

            def within_call(share: float, asked: int = asked, method: str = method) -> None:
                # The call's share of its variants, less one until they are filtered: the job moves while a
                # model works (a small job is one call), and reaches a call's end only when it has ended.
                progress(within=min(asked - 1, int(share * asked)), method=method)

            produced = augmenter.augment(
                [s.text for s in chunk],
                wanted,
                seed=seed,
                language=language,
                params=method_params,
                hints=hints,
                progress=within_call,
            )
            pairs = [
                (source, variant) for source, variants in zip(chunk, produced, strict=True) for variant in variants
            ]
            verdicts = candidate_filter.check(
                [(source.text, variant.text) for source, variant in pairs],
                # The same encoder chose WordNet's synonyms in context: its cosines need no second pass.
                [
                    variant.details.pop("semantic_similarity", None) if encoder is not None else None
                    for _, variant in pairs
                ],
            )
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
                            semantic_similarity=verdict.semantic_similarity,
                            novelty=verdict.novelty,
                        )
                    )
                    kept_labels.append(source.labels)
            generated += len(pairs)
            not_generated += sum(wanted) - len(pairs)
            done += sum(wanted)
            progress(method=method)
        per_method[method] = {"generated": generated, "kept": len(kept) - kept_before}

    rejections = _score_labels(inputs, kept, kept_labels, progress)

    with session_scope(engine) as session:
        # Terms a lead protected while the job ran: the word-level methods skipped those read when it began, so
        # a variant that replaced a word protected since is dropped here, as the rules below apply those in force
        terms: ProtectedTerms = inputs.hints["protected"]
        kept, newly_protected, terms = _without_newly_protected(session, inputs, kept, terms)
        ids, raced = insert_variants(session, dataset.id, job_id, kept, created_by)
        # The rules in force now decide, not those read when the job began (minutes or hours ago): a lead who
        # switched auto-approval or auto-rejection off meanwhile sees no variant decided by it. The dataset's
        # row is held from here until this commits (after the inserts: a change of reviews_required, which
        # holds up every decision while it waits for the row, does not wait for them), so a change of the
        # rules waits for these decisions or comes first.
        now = locked_settings(session, dataset)
        # Read again under the row a terms edit holds too (Postgres: one committed while the variants were
        # inserted; SQLite's edit waits for this writer): what it protected is deleted from what was inserted.
        left, late, _ = _without_newly_protected(session, inputs, kept, terms)
        if late:
            staying = {id(v) for v in left}
            hashes = [v.content_hash for v in kept if id(v) not in staying]
            gone = set(delete_inserted(session, dataset.id, job_id, hashes))
            kept, ids, newly_protected = left, [i for i in ids if i not in gone], newly_protected + len(gone)
        automatic = _rejections_in_force(rejections, inputs.settings, now)
        rule = auto_approval.rule_in(now)
        automatic += _auto_approve(rule, kept, {id(d.variant) for d in automatic})
        outcomes = _record_automatic(session, dataset.id, job_id, automatic)
        dropped = candidate_filter.counts()
        # Stored meanwhile (another job, a concurrent commit): the unique index skipped them, a duplicate like any.
        dropped["duplicate"] = dropped.get("duplicate", 0) + raced
        if newly_protected:  # what the drop left of each method
            dropped["protected_term"] = newly_protected
            for method, figures in per_method.items():
                figures["kept"] = sum(1 for v in kept if v.method == method)
        result = {
            "dataset": dataset.name,
            "methods": methods,
            "seed": seed,
            "requested": total,
            "generated": total - not_generated,
            "kept": len(ids),
            "inserted": len(ids),
            "dropped": {**dropped, "no_candidate": not_generated},
            "advice": drop_advice(total, len(ids), {**dropped, "no_candidate": not_generated}),
            "duplicate_at_insert": raced,
            "per_method": per_method,
            "variant_ids": ids[:1000],
            "variant_ids_count": len(ids),  # the list is cut to 1,000 (a job's params are cut to 100 likewise)
            "plan_id": params.get("plan_id"),
            # the project's members read a job's result: a model directory by its last part (access.shown_provenance)
            "semantic_similarity": shown_provenance(
                {"model": getattr(encoder, "name", None), "unavailable": no_encoder}
            ),
            "label_model_id": inputs.label_model.id if inputs.label_model else None,
            "flagged": sum(1 for v in kept if v.label_flag),
            "automatic": outcomes,
            "auto_approval_rule": rule.get("version") if rule else None,
        }
        report(done=done, total=total, kept=len(ids), dropped=result["dropped"])
        finish(session, result)
    log.info("augment job %s: %s of %s candidates kept", job_id, len(ids), total)
    return result


@dataclass
class _Pending:
    variant: NewVariant
    outcome: str
    reason: str | None = None
    note: str | None = None


# Why candidates were dropped, in words a person can act on (a job's result `advice`, when most were dropped).
DROP_ADVICE = {
    "no_candidate": "the augmenter found nothing it may change in those texts (their words are protected terms, "
    "or have no replacement it accepts): read the dataset's protected terms, or augment other texts",
    "duplicate": "they repeat variants already stored (a text's candidates run out): augment other texts, or use "
    "another method",
    "empty": "they came out empty (the model wrote nothing): use another method",
    "control_characters": "they hold control characters or characters no database stores, which their sources do "
    "not (a model's byte-level output): use another method",
    "identical_to_source": "they repeat their source",
    "leakage": "they are near copies of val/test texts (the leak guard)",
    "length_ratio": "they fall outside the job's length ratio (filters.min/max_length_ratio)",
    "low_similarity": "they fall below the job's filters.min_similarity",
    "low_semantic_similarity": "they fall below the job's filters.min_semantic_similarity",
    "protected_term": "they replace a term the dataset came to protect while the job ran",
}


def drop_advice(requested: int, kept: int, dropped: dict[str, int]) -> str | None:
    """What to do when a job kept fewer than half of the variants asked of it: its main reasons, in words."""
    if requested <= 0 or kept * 2 >= requested:
        return None
    reasons = sorted(((n, why) for why, n in dropped.items() if n and why in DROP_ADVICE), reverse=True)[:2]
    if not reasons:
        return None
    said = "; ".join(f"{n} {DROP_ADVICE[why]}" for n, why in reasons)
    return f"kept {kept} of {requested}: {said}"


WORD_LEVEL_METHODS = frozenset({"wordnet", "mlm"})  # the methods that never replace a protected term


def _without_newly_protected(
    session: Session, inputs: JobInputs, kept: list[NewVariant], checked: ProtectedTerms
) -> tuple[list[NewVariant], int, ProtectedTerms]:
    """The kept variants less those of a word-level method that replaced a term the dataset protects now and
    `checked` (the terms they were checked against) did not, how many were dropped, and the terms now."""
    now = protected_for(session, inputs.dataset)
    added = ProtectedTerms(set(now.terms) - set(checked.terms))
    if not added:
        return kept, 0, now
    source_text = {s.sample_id: s.text for s in inputs.sources}
    left = [v for v in kept if v.method not in WORD_LEVEL_METHODS or not added.lost(source_text[v.parent_id], v.text)]
    return left, len(kept) - len(left), now


def _score_labels(
    inputs: JobInputs, kept: list[NewVariant], labels: list[dict[str, str]], progress: Callable[..., None]
) -> list[_Pending]:
    """The dataset's label model scores every kept variant; confident label changes go to rejection where the
    dataset says so."""
    if inputs.label_model is None or not kept:
        return []
    progress(phase="label model")
    settings = inputs.settings
    scores = inputs.label_model.score(
        [v.text for v in kept],
        labels,
        confidence=settings.label_change_confidence,
        on_batch=lambda d, t: progress(phase="label model", scored=d),
    )
    rejected = []
    for variant, score in zip(kept, scores, strict=True):
        variant.label_consistency = score.consistency
        variant.label_flag = score.flag
        variant.scores["label_model"] = {
            **inputs.label_model.scorer,
            "run_id": inputs.label_model.id,
            "probs": score.probs,
            "changed": score.changed,
            "flagged": score.flagged,
            **({"unheeded": score.unheeded} if score.unheeded else {}),
        }
        if score.changed and settings.auto_reject_label_changed:
            changes = ", ".join(f"{task} → {label}" for task, label in sorted(score.changed.items()))
            rejected.append(
                _Pending(
                    variant, "rejected", AUTO_REJECT_REASON, f"model {inputs.label_model.id} is confident: {changes}"
                )
            )
    return rejected


def _rejections_in_force(rejected: list[_Pending], used: VariantSettings, now: VariantSettings) -> list[_Pending]:
    """The label model's rejections, if the dataset still sends confident label changes to rejection, with the
    same label model and at no higher a confidence than they were scored at; else people decide."""
    if (
        not now.auto_reject_label_changed
        or now.label_model_id != used.label_model_id
        or now.label_change_confidence > used.label_change_confidence
    ):
        return []
    return rejected


def _auto_approve(rule: dict[str, Any] | None, kept: list[NewVariant], decided: set[int]) -> list[_Pending]:
    if rule is None:
        return []
    open_ = [v for v in kept if id(v) not in decided]
    features = [
        auto_approval.VariantFeatures(
            v.semantic_similarity,
            v.similarity,
            v.novelty,
            v.scores.get("length_ratio"),
            v.label_consistency,
            v.label_flag,
            v.method,
            auto_approval.disputed(v.scores),
        )
        for v in open_
    ]
    verdicts = auto_approval.decide(rule, features, [v.content_hash for v in open_])
    note = auto_approval.approval_note(rule)
    return [
        _Pending(v, verdict, None, note if verdict == "approved" else None)
        for v, verdict in zip(open_, verdicts, strict=True)
        if verdict is not None
    ]


def _record_automatic(session: Session, dataset_id: int, job_id: int, pending: list[_Pending]) -> dict[str, int]:
    outcomes = {"rejected": 0, "approved": 0, "audit": 0}
    if not pending:
        return outcomes
    ids = inserted_ids(session, dataset_id, job_id, [p.variant.content_hash for p in pending])
    decisions = [
        AutomaticDecision(ids[p.variant.content_hash], p.outcome, p.reason, p.note)
        for p in pending
        if p.variant.content_hash in ids
    ]
    record_automatic_decisions(session, automatic_reviewer(session).id, decisions)
    for d in decisions:
        outcomes[d.outcome] += 1
    return outcomes
