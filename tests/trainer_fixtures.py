"""Fixtures of the trainer tests: a tiny random BERT encoder on disk and small two-task data sets.

Import the fixtures into a test module (`from tests.trainer_fixtures import tiny_encoder`); the encoder is
built
once per session (≈3 s) and loads through the same AutoModel/AutoTokenizer path as a hub model.
"""

from __future__ import annotations

import csv
import io
import random
from typing import Any

import pytest

from tests.tiny_models import EXAMPLE_CSV, build_tiny_bert_mlm

COLORS = ["red", "blue"]
SIZES = ["small", "big", "huge"]
FILLER = ["tax", "vote", "school", "health", "jobs", "border", "farm", "veterans", "energy", "trade"]


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 2-layer, 64-wide random BERT with a WordPiece vocabulary trained on the example texts."""
    return str(build_tiny_bert_mlm(tmp_path_factory.mktemp("tiny_bert")))


def synthetic_texts(n: int, seed: int = 0) -> list[tuple[str, str, str]]:
    """(text, color, size): the labels are words of the text, behind a random-length filler prefix."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        color, size = COLORS[i % 2], SIZES[(i // 2) % 3]
        filler = " ".join(rng.choice(FILLER) for _ in range(rng.randint(1, 10)))
        rows.append((f"{filler} {color} {size} {i}", color, size))
    return rows


def synthetic_split(n_train: int = 36, n_val: int = 12, n_test: int = 12) -> Any:
    from trainer.examples import Example, SplitData, TaskSpec

    rows = synthetic_texts(n_train + n_val + n_test)
    examples = [Example(text, {"color": c, "size": s}, i + 1, f"h{i}") for i, (text, c, s) in enumerate(rows)]
    return SplitData(
        [TaskSpec("color", COLORS), TaskSpec("size", SIZES)],
        examples[:n_train],
        examples[n_train : n_train + n_val],
        examples[n_train + n_val :],
        "synthetic",
    )


def tiny_keys(encoder: str, **overrides: Any) -> dict[str, Any]:
    """Config keys for the tiny encoder: short texts, small batches and heads, one thread; `overrides` on top."""
    return {"encoder": encoder, "max_length": 32, "batch_size": 8, "head_hidden": 32, "num_threads": 1, **overrides}


def fast_config(encoder: str, **overrides: Any) -> Any:
    """A config for tiny models: small heads, no warm-up, few epochs, one thread."""
    from trainer.config import TrainConfig

    base = {
        "encoder": encoder,
        "epochs": 3,
        "batch_size": 8,
        "grad_accum": 1,
        "max_length": 32,
        "head_hidden": 64,
        "lr": 3e-3,
        "warmup_ratio": 0.0,
        "patience": 0,
        "num_threads": 1,
        "eval_batch_size": 32,
    }
    return TrainConfig.from_dict({**base, **overrides})


def small_csv(n_train: int = 48, n_val: int = 16, n_test: int = 16, n_unlabelled: int = 6) -> bytes:
    """Rows of the example dataset (bias + message) with a split column, plus unlabelled train texts."""
    with EXAMPLE_CSV.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    by_split: dict[str, list[dict[str, str]]] = {"train": [], "val": [], "test": []}
    for row in rows:
        by_split[row["split"]].append(row)
    picked = by_split["train"][: n_train + n_unlabelled] + by_split["val"][:n_val] + by_split["test"][:n_test]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["id", "text", "bias", "message", "split"])
    for i, row in enumerate(picked):
        unlabelled = row["split"] == "train" and i >= n_train
        writer.writerow(
            [
                row["id"],
                row["text"],
                "" if unlabelled else row["bias"],
                "" if unlabelled else row["message"],
                row["split"],
            ]
        )
    return out.getvalue().encode()


def import_small(engine: Any, name: str = "small", **kwargs: Any) -> str:
    from db.session import session_scope
    from services.importing import ImportSpec, import_file

    with session_scope(engine) as s:
        import_file(s, small_csv(**kwargs), ImportSpec(dataset=name, tasks=["bias", "message"]), filename="s.csv")
    return name


def add_variant(
    engine: Any,
    dataset: str,
    parent_external_split: str,
    status: str,
    text: str,
    labels: dict[str, str] | None = None,
) -> int:
    """An augmented variant of the first original of a split, with the parent's labels unless given."""
    from sqlalchemy import select

    from core.textnorm import content_hash
    from db.datasets import get_dataset
    from db.models import Origin, Sample, SampleLabel
    from db.session import session_scope

    with session_scope(engine) as s:
        ds = get_dataset(s, dataset)
        parent = s.scalars(
            select(Sample)
            .where(
                Sample.dataset_id == ds.id,
                Sample.split == parent_external_split,
                Sample.origin == Origin.original,
            )
            .order_by(Sample.id)
        ).first()
        assert parent is not None and parent.labels
        variant = Sample(
            dataset_id=ds.id,
            text=text,
            split=parent.split,
            origin=Origin.augmented,
            content_hash=content_hash(text),
            parent_id=parent.id,
            method="test",
            review_status=status,
        )
        variant.labels_rows = [SampleLabel(task=t, label=v) for t, v in (labels or parent.labels).items()]
        s.add(variant)
        s.flush()
        return variant.id
