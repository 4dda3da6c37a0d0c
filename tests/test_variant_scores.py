"""Label-model scores on pending variants: which scorer's score stands when two runs write at once (or a run is
retried), that a vote does not make a running scorer skip a variant while an edit does, and that a change of
text clears the model scores computed for the old one."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

import pytest

from db.session import session_scope
from tests.review_fixtures import add_variant, make_dataset

PROBS = {"bias": {"neutral": 0.3, "partisan": 0.7}}


def scorer(run_id: int, f1: float) -> dict[str, Any]:
    return {"run_id": run_id, "kind": "single", "name": f"run {run_id}", "val_macro_f1": f1, "chosen": False}


def write_score(
    engine: Any, sample_id: int, text: str, run_id: int, f1: float, meanwhile: Callable[[], None] | None = None
) -> int:
    """What a finished run writes for one variant (its val macro-F1 doubles as the consistency, to tell the
    scores apart); `meanwhile` runs after it has read the variant's current score and before it writes."""
    from db import training_runs as db_runs
    from services.label_model import automatic_rule

    rule = automatic_rule(scorer(run_id, f1))

    def deciding(current: dict[str, Any] | None) -> bool:
        verdict = rule(current)
        if meanwhile is not None:
            meanwhile()
        return verdict

    with session_scope(engine) as s:
        return db_runs.apply_consistency_scores(
            s,
            run_id,
            [db_runs.ConsistencyScore(sample_id, text, f1, False, PROBS)],
            scorer=scorer(run_id, f1),
            replace_if=deciding,
        )


class OtherScorer:
    """Another run writing the same variant from its own thread (its own connection), started between the
    first scorer's read and its write. It gets a second: a write that does not wait for the first scorer's
    transaction lands in between; one that waits (the rows are locked) lands after it."""

    def __init__(self, engine: Any, sample_id: int, text: str, run_id: int, f1: float) -> None:
        self.args = (engine, sample_id, text, run_id, f1)
        self.pool = ThreadPoolExecutor(max_workers=1)
        self.future: Future[int] | None = None

    def start_and_wait_a_little(self) -> None:
        self.future = self.pool.submit(write_score, *self.args)
        wait([self.future], timeout=1.0)

    def join(self) -> int:
        assert self.future is not None
        try:
            return self.future.result(timeout=60)  # its error, if any, raised here
        finally:
            self.pool.shutdown()


def one_variant(engine: Any, reviews_required: int = 1) -> tuple[int, str]:
    text = "We have to protect Social Security for our older people."
    with session_scope(engine) as s:
        sources = make_dataset(s, reviews_required=reviews_required)
        return add_variant(s, sources[0], text), text


def stored_score(engine: Any, sample_id: int) -> tuple[int, float, float]:
    from db.models import Sample

    with session_scope(engine) as s:
        sample = s.get_one(Sample, sample_id)
        label_model = sample.scores["label_model"]
        return label_model["run_id"], label_model["val_macro_f1"], sample.label_consistency


def test_two_runs_scoring_at_once_keep_the_better_score(any_engine) -> None:
    """Run B (val macro-F1 0.6) reads the variant (no score yet: it may write); run C (0.7) writes and commits
    meanwhile. Without the rows locked from read to write, B then overwrote C's better score."""
    sample_id, text = one_variant(any_engine)
    other = OtherScorer(any_engine, sample_id, text, run_id=3, f1=0.7)
    assert write_score(any_engine, sample_id, text, 2, 0.6, meanwhile=other.start_and_wait_a_little) == 1
    assert other.join() == 1
    assert stored_score(any_engine, sample_id) == (3, 0.7, 0.7)
    # And the other way round: the better score written first stays.
    assert write_score(any_engine, sample_id, text, 2, 0.6) == 0
    assert stored_score(any_engine, sample_id) == (3, 0.7, 0.7)


def test_a_retried_run_replaces_only_its_own_scores(any_engine) -> None:
    """Run A's first attempt scored the variant (0.5) and failed; its retry trains worse (0.4). The retry may
    replace what A wrote, never what another run wrote: not C's score written before the retry reads the
    variant, nor one C commits between the retry's read and its write."""
    sample_id, text = one_variant(any_engine)
    assert write_score(any_engine, sample_id, text, 1, 0.5) == 1
    assert write_score(any_engine, sample_id, text, 1, 0.4) == 1  # its own score, retried
    assert stored_score(any_engine, sample_id) == (1, 0.4, 0.4)

    other = OtherScorer(any_engine, sample_id, text, run_id=3, f1=0.7)
    assert write_score(any_engine, sample_id, text, 1, 0.4, meanwhile=other.start_and_wait_a_little) == 1
    assert other.join() == 1
    assert stored_score(any_engine, sample_id) == (3, 0.7, 0.7)
    assert write_score(any_engine, sample_id, text, 1, 0.4) == 0
    assert stored_score(any_engine, sample_id) == (3, 0.7, 0.7)


@pytest.mark.parametrize(
    ("current", "expected"),
    [
        ({"run_id": 1, "val_macro_f1": 0.9}, True),  # the run's own score, whatever its F1
        ({"run_id": 2, "val_macro_f1": 0.9}, False),
        ({"val_macro_f1": 0.9}, False),  # a score without a run is not "its own" for a scorer without one
    ],
)
def test_only_a_runs_own_score_escapes_the_f1_rule(current, expected) -> None:
    from services.label_model import automatic_rule

    scorer_without_id = {"val_macro_f1": 0.1}
    own = automatic_rule(scorer(1, 0.1))(current)
    assert own is expected
    assert automatic_rule(scorer_without_id)(current) is False


def users(engine: Any, *names: str) -> None:
    from db.auth import get_or_create_user
    from tests.conftest import join_project

    with session_scope(engine) as s:
        for name in names:
            get_or_create_user(s, name, "annotator")
            join_project(s, name)


def decide_as(engine: Any, name: str, sample_id: int, decision: str, **kwargs: Any) -> None:
    from db.auth import get_or_create_user
    from db.models import Sample
    from services.review import decide

    with session_scope(engine) as s:
        version = s.get_one(Sample, sample_id).version
        decide(s, sample_id, get_or_create_user(s, name, "annotator"), decision, version, **kwargs)


def undo_as(engine: Any, name: str, sample_id: int) -> None:
    from db.auth import get_or_create_user
    from db.models import Sample
    from services.review_undo import undo_decision

    with session_scope(engine) as s:
        version = s.get_one(Sample, sample_id).version
        undo_decision(s, sample_id, get_or_create_user(s, name, "annotator"), version)


def test_a_vote_does_not_make_a_running_scorer_skip_a_variant_but_an_edit_does(engine) -> None:
    """k = 2: a first vote leaves the variant pending with a new version, and its text unchanged, so the score a
    run computed meanwhile still describes it; an edit changed the text, so the score is refused."""
    from db import training_runs as db_runs
    from db.models import Sample

    with session_scope(engine) as s:
        sources = make_dataset(s, reviews_required=2)
        voted = add_variant(s, sources[0], "We must defend Social Security for our seniors.")
        edited = add_variant(s, sources[1], "Proud to meet with local growers in Ames today.")
        dataset_id = s.get_one(Sample, voted).dataset_id
    users(engine, "ann", "ed")
    with session_scope(engine) as s:
        page = db_runs.pending_variants(s, dataset_id)  # what a finishing run reads, then predicts on
    decide_as(engine, "ann", voted, "approve")
    decide_as(engine, "ed", edited, "edit", text="Proud to meet with the farmers of Ames today.")
    scores = [db_runs.ConsistencyScore(v.id, v.text, 0.9, False, PROBS) for v in page]
    with session_scope(engine) as s:
        assert db_runs.apply_consistency_scores(s, 4, scores) == 1
    with session_scope(engine) as s:
        kept = s.get_one(Sample, voted)
        assert kept.review_status == "pending" and kept.version == 2
        assert kept.label_consistency == 0.9 and kept.scores["label_model"]["run_id"] == 4
        changed = s.get_one(Sample, edited)
        assert changed.review_status == "pending" and "label_model" not in changed.scores
        assert changed.label_consistency is None


def test_an_edit_and_an_undo_restoring_other_text_clear_the_old_texts_model_scores(engine) -> None:
    from db import training_runs as db_runs
    from db.models import Sample
    from services.auto_approval import VariantFeatures

    generated = "We must protect Social Security for our elderly."
    with session_scope(engine) as s:
        sources = make_dataset(s, reviews_required=2)
        sample_id = add_variant(s, sources[0], generated, semantic=0.91, flag=True, consistency=0.35)
        voted_only = add_variant(s, sources[1], "Proud to have met local farmers in Ames today.", consistency=0.6)
        for sid in (sample_id, voted_only):
            sample = s.get_one(Sample, sid)
            sample.generated_text = None  # as the augmenters store a variant: set at its first edit
            sample.scores = {
                "similarity": 0.8,
                "length_ratio": 1.0,
                "semantic_similarity": 0.91,
                "label_model": {"run_id": 1, "val_macro_f1": 0.5, "probs": PROBS},
            }
    users(engine, "ann", "ed")

    def model_scores(sid: int) -> tuple[Any, ...]:
        with session_scope(engine) as s:
            sample = s.get_one(Sample, sid)
            held = sample.scores or {}
            return (
                sample.semantic_similarity,
                sample.label_consistency,
                sample.label_flag,
                held.get("semantic_similarity"),
                (held.get("label_model") or {}).get("run_id"),
            )

    # A vote, and its undo, leave the text and so its scores.
    decide_as(engine, "ann", voted_only, "approve")
    undo_as(engine, "ann", voted_only)
    assert model_scores(voted_only) == (None, 0.6, False, 0.91, 1)

    decide_as(engine, "ann", sample_id, "approve")
    assert model_scores(sample_id) == (0.91, 0.35, True, 0.91, 1)
    decide_as(engine, "ed", sample_id, "edit", text="We must protect Social Security for every retiree.")
    assert model_scores(sample_id) == (None, None, None, None, None)
    with session_scope(engine) as s:
        sample = s.get_one(Sample, sample_id)
        assert sample.review_status == "pending" and sample.generated_text == generated
        # The n-gram scores are the edited text's: one word of the generated text changed, so it is less alike
        # its source than the generated text was (0.8); novelty against the training texts is not recomputed.
        source_text = s.get_one(Sample, sources[0]).text
        assert 0.0 < sample.similarity < 0.8 and sample.scores["similarity"] == sample.similarity
        assert sample.scores["length_ratio"] == round(len(sample.text.lower()) / len(source_text.lower()), 4)
        assert sample.novelty is None and "novelty" not in sample.scores
        assert sample.scores["leakage"] < 0.8 and sample.scores["containment"] < 0.7
        # What people judged was the generated text: auto-approval still learns from its scores.
        assert sample.scores["generated_text"] == {
            "semantic_similarity": 0.91,
            "label_consistency": 0.35,
            "label_flag": True,
            "similarity": 0.8,
            "novelty": None,
            "length_ratio": 1.0,
        }
        features = VariantFeatures.of(sample)
        assert (features.semantic_similarity, features.label_consistency, features.label_flag) == (0.91, 0.35, True)
        assert (features.similarity, features.length_ratio) == (0.8, 1.0)
        edited_text = sample.text

    # The next run scores the edited text; undoing the edit restores the generated text, and clears them again.
    with session_scope(engine) as s:
        written = db_runs.apply_consistency_scores(
            s, 6, [db_runs.ConsistencyScore(sample_id, edited_text, 0.8, False, PROBS)]
        )
        assert written == 1
    assert model_scores(sample_id) == (None, 0.8, False, None, 6)
    undo_as(engine, "ed", sample_id)
    assert model_scores(sample_id) == (None, None, None, None, None)
    with session_scope(engine) as s:
        sample = s.get_one(Sample, sample_id)
        assert sample.text == generated and sample.scores["generated_text"]["label_consistency"] == 0.35


def test_variants_edited_before_their_scores_were_kept_keep_their_generated_texts_features(engine) -> None:
    """Auto-approval learns from the generated text's features. Edits before 2 December kept none of its scores
    apart: their n-gram scores (similarity, novelty, length ratio) were left on the row, still the generated
    text's; edits since the model scores were kept apart hold those under scores.generated_text, and left the
    n-gram scores on the row too. Edited again now, a variant of either kind keeps the generated text's n-gram
    scores; the model scores on a row edited before any were kept apart may be a later run's on the edited
    text, so they count as unknown rather than as the generated text's."""
    from db.models import Sample
    from services.auto_approval import VariantFeatures

    generated = "We must protect Social Security for our elderly."
    edited_before = "We must protect Social Security for our grandparents."
    with session_scope(engine) as s:
        sources = make_dataset(s)
        oldest = add_variant(s, sources[0], generated, consistency=0.6, novelty=0.4)
        older = add_variant(s, sources[0], "We have to protect Social Security for our older people.", novelty=0.4)
        for sid, held in (
            (oldest, {}),
            (older, {"generated_text": {"semantic_similarity": 0.91, "label_consistency": 0.35, "label_flag": True}}),
        ):
            sample = s.get_one(Sample, sid)
            sample.generated_text, sample.text = sample.text, f"{edited_before} ({sid})"
            sample.scores = {"similarity": 0.8, "length_ratio": 1.0, "novelty": 0.4, **held}
            if held:
                sample.semantic_similarity = sample.label_consistency = sample.label_flag = None
    users(engine, "ed")

    def features(sid: int) -> tuple[Any, ...]:
        with session_scope(engine) as s:
            f = VariantFeatures.of(s.get_one(Sample, sid))
            return (f.semantic_similarity, f.similarity, f.novelty, f.length_ratio, f.label_consistency, f.label_flag)

    assert features(older) == (0.91, 0.8, 0.4, 1.0, 0.35, True)
    for sid in (oldest, older):
        decide_as(engine, "ed", sid, "edit", text=f"Social Security must be protected for every retiree ({sid}).")
    assert features(older) == (0.91, 0.8, 0.4, 1.0, 0.35, True)
    assert features(oldest) == (None, 0.8, 0.4, 1.0, None, None)
    with session_scope(engine) as s:
        sample = s.get_one(Sample, oldest)
        assert sample.similarity is not None and sample.similarity < 0.8 and sample.scores["length_ratio"] != 1.0


def test_a_variant_flags_where_it_looks_less_like_its_class_than_9_in_10_of_the_classs_val_texts() -> None:
    """The model's other label flagged 94% of faithful variants after a weak model and 69% after a trained one
    (bench/label_flags.py): a flag said little. A task now flags where the intended class's probability is below
    what 9 in 10 of the class's val texts get (`flag_below`, from trainer.metrics' `p10`); another label above it
    is no flag (`unheeded`), and a class with fewer than 5 val texts flags by the other label, as before."""
    import numpy as np

    from services.label_model import class_thresholds
    from services.variant_scoring import label_scores
    from trainer.examples import TaskSpec
    from trainer.metrics import evaluate_probs

    tasks = [TaskSpec("bias", ["neutral", "partisan"]), TaskSpec("tone", ["calm", "angry", "mixed"])]
    # val: 10 partisan texts scored 0.15..0.60 for partisan, 10 neutral ones, 10 calm, 10 angry, 2 mixed
    partisan = np.linspace(0.15, 0.6, 10)
    val = {
        "bias": np.array([[1 - p, p] for p in partisan] + [[0.9, 0.1]] * 10),
        "tone": np.array(
            [[0.8, 0.1, 0.1]] * 10 + [[0.3, 0.6, 0.1]] * 10 + [[0.2, 0.2, 0.6]] * 2 + [[0.8, 0.1, 0.1]] * 10
        ),
    }
    gold = np.array([[1, 0]] * 10 + [[0, 1]] * 10 + [[0, 2]] * 2 + [[1, 0]] * 10)
    val["bias"] = np.concatenate([val["bias"], [[0.5, 0.5]] * 2, [[0.7, 0.3]] * 10])
    gold[:10, 0], gold[10:20, 0], gold[20:22, 0], gold[22:, 0] = 1, 0, 0, 1
    below = class_thresholds(evaluate_probs(val, gold, tasks))
    assert below["bias"]["partisan"] == pytest.approx(float(np.quantile(np.r_[partisan, [0.3] * 10], 0.1)), abs=1e-6)
    assert "mixed" not in below["tone"]  # two val texts: too few to say what is usual
    p10 = below["bias"]["partisan"]
    probs = {
        "bias": np.array([[1 - p10 + 0.05, p10 - 0.05], [0.7, 0.3], [0.95, 0.05], [0.9, 0.1]]),
        "tone": np.array([[0.9, 0.1, 0.0], [0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.9, 0.05, 0.05]]),
    }
    labels = [
        {"bias": "partisan", "tone": "calm"},  # partisan below its p10: flagged (neutral at 0.84: confident)
        {"bias": "partisan", "tone": "calm"},  # partisan 0.3, another label, but within what partisan texts get
        {"bias": "neutral", "tone": "calm"},  # calm at 0.05: below its p10, flagged (angry at 0.9: confident)
        {"bias": "neutral", "tone": "mixed"},  # mixed: no threshold (2 val texts), the other label flags
    ]
    got = label_scores(tasks, probs, labels, confidence=0.8, flag_below=below)
    assert [(g.flag, g.changed, g.unheeded, g.flagged) for g in got] == [
        (True, {"bias": "neutral"}, {}, ["bias"]),
        (False, {}, {"bias": "neutral"}, []),
        (True, {"tone": "angry"}, {}, ["tone"]),
        (True, {"tone": "calm"}, {}, ["tone"]),
    ]
    assert [g.consistency for g in got] == pytest.approx([p10 - 0.05, 0.3, 0.05, 0.05])  # the same scores as before
    # a run recorded before p10 was (no thresholds): every other label flags, as it always did
    assert [g.flag for g in label_scores(tasks, probs, labels, confidence=0.8)] == [True, True, True, True]


def test_a_disagreement_left_unheeded_is_stored_with_the_score(engine) -> None:
    import numpy as np

    from db import training_runs as db_runs
    from db.models import Sample
    from services.label_model import consistency_from_probs
    from trainer.examples import TaskSpec

    variant, text = one_variant(engine)  # intended: bias partisan (its source's labels)
    pending = [db_runs.PendingVariant(variant, text, {"bias": "partisan"})]
    below = {"bias": {"partisan": 0.25}}
    scores = consistency_from_probs(
        [TaskSpec("bias", ["neutral", "partisan"])], pending, {"bias": np.array([[0.7, 0.3]])}, flag_below=below
    )
    with session_scope(engine) as s:
        assert db_runs.apply_consistency_scores(s, 3, scores, scorer={"flag_below": below}) == 1
    with session_scope(engine) as s:
        row = s.get_one(Sample, variant)
        assert row.label_flag is False and row.label_consistency == pytest.approx(0.3)
        assert row.scores["label_model"]["unheeded"] == {"bias": "neutral"}
        assert row.scores["label_model"]["flag_below"] == below and row.scores["label_model"]["flagged"] == []
