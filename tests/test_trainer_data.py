"""Batching (length grouping, dynamic padding, oversampling, curriculum) and what a run may train on."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from tests.trainer_fixtures import add_variant, fast_config, import_small, synthetic_split, tiny_encoder  # noqa: F401
from trainer.data import (
    Encoded,
    TrainBatches,
    families_of,
    label_matrix,
    length_grouped_batches,
    oversample_factors,
    pad_batch,
    random_batches,
)
from trainer.examples import IGNORE, Example


def test_pad_batch_dynamic_and_fixed() -> None:
    out = pad_batch([[5, 6, 7], [8]], pad_id=0)
    assert out["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert out["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert pad_batch([[5, 6, 7], [8]], pad_id=1, pad_to=5)["input_ids"].tolist() == [
        [5, 6, 7, 1, 1],
        [8, 1, 1, 1, 1],
    ]


def test_length_grouped_batches_cover_everything_once_and_pad_far_less() -> None:
    rng = np.random.default_rng(0)
    lengths = np.concatenate([rng.integers(5, 40, 900), rng.integers(100, 320, 100)])  # short posts, a long tail
    indices = list(range(len(lengths)))
    grouped = length_grouped_batches(indices, lengths, 12, random.Random(1))
    flat = sorted(i for b in grouped for i in b)
    assert flat == indices and all(1 <= len(b) <= 12 for b in grouped)

    def padded_tokens(batches: list[list[int]]) -> int:
        return sum(len(b) * max(lengths[i] for i in b) for b in batches)

    shuffled = random_batches(indices, 12, random.Random(1))
    assert padded_tokens(grouped) < 0.5 * padded_tokens(shuffled)
    assert padded_tokens(grouped) < 0.3 * len(lengths) * 320  # the fixed-320 baseline
    # Another epoch (seed) gives another order.
    assert length_grouped_batches(indices, lengths, 12, random.Random(2)) != grouped


def test_label_matrix_marks_missing_labels() -> None:
    from trainer.examples import TaskSpec

    tasks = [TaskSpec("a", ["x", "y"]), TaskSpec("b", ["p", "q"])]
    m = label_matrix([Example("t", {"a": "y"}), Example("u", {"b": "p", "a": "x"})], tasks)
    assert m.tolist() == [[1, IGNORE], [0, 0]]


def test_oversample_factors_by_hand() -> None:
    # task 0: class 0 ×8, class 1 ×2; task 1: all class 0 except one IGNORE
    labels = torch.tensor([[0, 0]] * 8 + [[1, 0], [1, IGNORE]])
    factors = oversample_factors(labels, power=1.0, cap=3)
    assert factors == [1] * 8 + [3, 3]  # (8 / 2) ** 1 = 4, capped at 3
    assert oversample_factors(labels, power=0.5, cap=10) == [1] * 8 + [2, 2]  # sqrt(4) = 2
    assert oversample_factors(labels, power=1e6, cap=3) == [1] * 8 + [3, 3]  # 4 ** 1e6 reaches the cap, no overflow


def test_curriculum_starts_easy_and_grows() -> None:
    n = 20
    lengths = np.arange(1, n + 1)
    examples = [Example(f"t{i}", {"a": "x"}, i, difficulty=None) for i in range(n)]
    examples[19].difficulty = 0.0  # the longest text, but a previous model found it easy
    encoded = Encoded([[1] * int(k) for k in lengths], torch.zeros((n, 1), dtype=torch.long), lengths)
    batches = TrainBatches(
        encoded,
        examples,
        batch_size=4,
        group_by_length=True,
        seed=0,
        curriculum=True,
        curriculum_start=0.5,
        curriculum_epochs=2,
    )
    first = sorted(i for b in batches.epoch(0) for i in b)
    assert batches.fraction(0) == 0.5 and len(first) == 10
    assert 19 in first and 18 not in first  # easy by score, hard by length
    assert len([i for b in batches.epoch(1) for i in b]) == 15
    assert sorted(i for b in batches.epoch(2) for i in b) == list(range(n))


def _family_examples() -> tuple[list[Example], Encoded]:
    """Six originals (sample ids 1–6; 1–3 class x, 4–6 class y); three variants of sample 1, one of sample 4."""
    labels = ["x", "x", "x", "y", "y", "y", "x", "x", "x", "y"]
    sources = [None] * 6 + [1, 1, 1, 4]
    examples = [
        Example(f"t{i}", {"a": y}, i + 1, source_id=src) for i, (y, src) in enumerate(zip(labels, sources, strict=True))
    ]
    lengths = np.array([3, 9, 4, 7, 5, 8, 3, 4, 3, 7])
    tensor = torch.tensor([[0 if y == "x" else 1] for y in labels])
    return examples, Encoded([[1] * int(k) for k in lengths], tensor, lengths)


def test_one_per_source_draws_one_text_of_each_family_per_epoch() -> None:
    examples, encoded = _family_examples()
    assert families_of(examples) == [[0, 6, 7, 8], [1], [2], [3, 9], [4], [5]]
    for by_length in (True, False):
        batches = TrainBatches(encoded, examples, batch_size=4, group_by_length=by_length, seed=3, one_per_source=True)
        seen: set[int] = set()
        for epoch in range(40):
            shown = sorted(i for b in batches.epoch(epoch) for i in b)
            assert len(shown) == 6  # as long as an epoch of the originals, not of all ten texts
            assert sum(i in (0, 6, 7, 8) for i in shown) == 1 and sum(i in (3, 9) for i in shown) == 1
            assert {1, 2, 4, 5} <= set(shown)
            seen |= set(shown)
        assert seen == set(range(10))  # every variant is drawn in some epoch
        assert batches.max_batches_per_epoch() == 2 and batches.representatives() == [0, 1, 2, 3, 4, 5]
        assert batches.epoch(5) == batches.epoch(5)  # seeded: every rank of a distributed run draws the same
    every = TrainBatches(encoded, examples, batch_size=4, group_by_length=True, seed=3)
    assert sorted(i for b in every.epoch(0) for i in b) == list(range(10)) and every.max_batches_per_epoch() == 3
    assert every.representatives() is None  # every row counts


def test_one_per_source_on_originals_alone_gives_the_epochs_of_all() -> None:
    examples, encoded = _family_examples()
    examples, encoded = examples[:6], Encoded(encoded.input_ids[:6], encoded.labels[:6], encoded.lengths[:6])
    for by_length in (True, False):
        kw = {"batch_size": 4, "group_by_length": by_length, "seed": 7, "oversample": True}
        drawn, every = TrainBatches(encoded, examples, one_per_source=True, **kw), TrainBatches(encoded, examples, **kw)
        assert [drawn.epoch(e) for e in range(5)] == [every.epoch(e) for e in range(5)]


def test_oversampling_counts_families_when_one_text_of_each_is_drawn() -> None:
    examples, encoded = _family_examples()  # by family 3 of x and 3 of y; by text 6 of x and 4 of y
    kw = {"batch_size": 4, "group_by_length": True, "seed": 1, "oversample": True, "oversample_power": 1.0}
    drawn = TrainBatches(encoded, examples, one_per_source=True, **kw)
    assert drawn.factors == [1] * 10 and drawn.samples_per_epoch() == 6
    assert all(len([i for b in drawn.epoch(e) for i in b]) == 6 for e in range(5))
    every = TrainBatches(encoded, examples, **kw)
    assert every.factors == [1, 1, 1, 2, 2, 2, 1, 1, 1, 2]  # round(6 / 4) for y
    assert every.samples_per_epoch() == 14 == len([i for b in every.epoch(0) for i in b])
    rare_x = [  # sample 1's family is the only y
        Example(e.text, {"a": "y" if 1 in (e.source_id, e.sample_id) else "x"}, e.sample_id, source_id=e.source_id)
        for e in examples
    ]
    labels = torch.tensor([[0 if e.labels["a"] == "x" else 1] for e in rare_x])
    rare = TrainBatches(Encoded(encoded.input_ids, labels, encoded.lengths), rare_x, one_per_source=True, **kw)
    assert [rare.factors[i] for i in (0, 6, 7, 8)] == [4, 4, 4, 4]  # one family of y against five of x, capped
    assert rare.samples_per_epoch() == 5 + 4 and len([i for b in rare.epoch(2) for i in b]) == 9


def test_a_budgeted_plan_times_an_epoch_of_one_text_per_family(tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    from trainer.examples import SplitData, split_from_dict, split_to_dict
    from trainer.plan import Throughput
    from trainer.steps import prepare

    originals = synthetic_split(n_train=24)
    variants = [
        Example(f"{e.text} again {k}", dict(e.labels), 1000 + 10 * e.sample_id + k, source_id=e.sample_id)
        for e in originals.train[:8]
        for k in range(3)
    ]
    augmented = SplitData(originals.tasks, [*originals.train, *variants], originals.val, originals.test)
    sources = [e.source_id for e in augmented.train]
    assert [e.source_id for e in split_from_dict(split_to_dict(augmented)).train] == sources  # to DDP processes
    pace = Throughput(seconds_per_sample=0.05, eval_seconds=0.5)

    def plan(data: SplitData, sampling: str):  # type: ignore[no-untyped-def]
        config = fast_config(tiny_encoder, budget_minutes=0.5, epochs=20, variant_sampling=sampling, grad_accum=None)
        run = prepare(config, data)
        return run, run.plan(pace)

    drawn, drawn_plan = plan(augmented, "one_per_source")
    assert drawn.batches.samples_per_epoch() == 24 and len(drawn.data.train) == 48
    _, originals_plan = plan(originals, "all")
    _, every_plan = plan(augmented, "all")
    assert drawn_plan.steps == originals_plan.steps and drawn_plan.epochs == originals_plan.epochs
    assert every_plan.epochs < drawn_plan.epochs  # every variant, every epoch: twice the texts, half the epochs


def test_class_weights_count_families_when_one_text_of_each_is_drawn() -> None:
    from trainer.config import TrainConfig
    from trainer.examples import SplitData, TaskSpec
    from trainer.steps import build_loss

    examples, encoded = _family_examples()
    data = SplitData([TaskSpec("a", ["x", "y"])], examples, [], [])
    config = TrainConfig.from_dict({"encoder": "unused", "variant_sampling": "one_per_source"})
    drawn = TrainBatches(encoded, examples, batch_size=4, group_by_length=True, seed=0, one_per_source=True)
    weights = build_loss(config, data, encoded, 0.0, drawn.representatives()).class_weights["a"]
    assert weights.tolist() == [1.0, 1.0]  # 3 families of x, 3 of y: balanced as an epoch shows them
    every = build_loss(config, data, encoded, 0.0).class_weights["a"]
    assert every.tolist() == pytest.approx([10 / (2 * 6), 10 / (2 * 4)])  # six texts of x, four of y


def test_snapshot_has_train_originals_and_approved_only(engine) -> None:  # type: ignore[no-untyped-def]
    from db.datasets import get_dataset
    from db.models import Sample
    from db.session import session_scope
    from services.training_data import load_split_data

    name = import_small(engine, n_train=20, n_val=8, n_test=8, n_unlabelled=3)
    approved = add_variant(engine, name, "train", "approved", "an approved variant text")
    pending = add_variant(engine, name, "train", "pending", "a pending variant text")
    rejected = add_variant(engine, name, "train", "rejected", "a rejected variant text")
    val_variant = add_variant(engine, name, "val", "approved", "an approved variant of a val text")
    with session_scope(engine) as s:
        data = load_split_data(s, get_dataset(s, name))
        samples = {x.id: x for x in s.query(Sample)}
    snapshot = data.snapshot()
    ids = {sid for sid, _h in snapshot}
    assert approved in ids and not ids & {pending, rejected, val_variant}
    assert all(samples[sid].split == "train" for sid in ids)
    assert all(samples[sid].content_hash == h for sid, h in snapshot)
    assert len(ids) == 21  # 20 labelled originals + 1 approved; the 3 unlabelled texts train nothing
    assert {e.sample_id for e in data.val}.isdisjoint(ids) and len(data.val) == 8 and len(data.test) == 8
    assert val_variant not in {e.sample_id for e in data.val}  # evaluation is on originals only
    by_id = {e.sample_id: e for e in data.train}
    assert by_id[approved].source_id == samples[approved].parent_id is not None  # one family with its source
    assert by_id[samples[approved].parent_id].source_id is None


def test_unknown_task_is_rejected(engine) -> None:  # type: ignore[no-untyped-def]
    from core.errors import ValidationFailed
    from db.datasets import get_dataset
    from db.session import session_scope
    from services.training_data import load_split_data

    name = import_small(engine, n_train=10, n_val=4, n_test=4, n_unlabelled=0)
    with session_scope(engine) as s, pytest.raises(ValidationFailed) as err:
        load_split_data(s, get_dataset(s, name), ["bias", "sentiment"])
    assert err.value.field == "config.tasks"
