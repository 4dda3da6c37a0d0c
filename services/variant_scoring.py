"""Label preservation before review: a trained model's view of whether a variant keeps its source's labels.

When a run or an ensemble has finished for a dataset, each new variant is scored as it is made (the augment
job), and each pending variant again when a run finishes (services/run_execution.py), with one definition:
- `consistency`: the minimum over tasks of the model's probability for the variant's intended label;
- `flag`: in some task the variant's probability for its intended class lies below `flag_below` for that class,
  the probability 9 in 10 of the class's own val texts get more of (trainer.metrics `p10`, for a class with at
  least MIN_VAL_TEXTS val texts; without them, the model's most probable label under its decision rule differs
  from the intended one). It flags about 1 in 10 faithful variants per task whatever the model's quality: the
  model's other label flagged 94% of them after a weak model, 69% after a trained one, and its flags caught
  little more of the changed variants than of the faithful (bench/label_flags.py). The model's other label where
  the test does not flag is kept as `unheeded` (task → the label), for the card and for auto-approval, which
  leaves such variants to people;
- `changed`: a flagged task whose other label is at least `confidence` probable: the model is confident the
  variant changed a label (what a dataset may send straight to rejection, services/variant_settings.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from core.errors import ValidationFailed
from core.ngrams import NgramIndex, pairwise_jaccard
from core.textnorm import normalize_text
from db import training_runs as db_runs
from db.models import Dataset, Sample
from services import leak_guard

# What a model computed on a variant's text: columns, and their details in `scores`. When a person changes the
# text (an edit, an undo that restores other text) they no longer describe it and are cleared: the next finished
# run (or a chosen label model) scores the label consistency again; the semantic similarity, computed by the
# augment job only, stays empty.
MODEL_SCORE_COLUMNS = ("semantic_similarity", "label_consistency", "label_flag")
MODEL_SCORE_KEYS = ("semantic_similarity", "label_model")
# What the n-gram measures computed on it: recomputed for the new text (novelty, which needs every training
# text, is cleared: the review queue's expected-value sort then reads 1 − similarity to the source instead).
TEXT_SCORE_COLUMNS = ("similarity", "novelty")
TEXT_SCORE_KEYS = ("similarity", "length_ratio", "leakage", "containment", "novelty")
GENERATED_TEXT_SCORES = "generated_text"  # the generated text's scores, kept in `scores` at the first edit


def text_changed_values(session: Session, sample: Any, text: str, closest: leak_guard.Closest) -> dict[str, Any]:
    """What a variant's row gets besides its new `text` when a person writes it (services.review.rewritten,
    which has checked it against val/test: `closest`).

    The model scores are cleared, so that the queue never shows (or sorts by) a score computed on another
    text, and a running scorer's result for the old text is refused (db.training_runs.apply_consistency_scores
    compares the text). The n-gram scores are those of the new text. The first edit keeps the generated text's
    scores under scores["generated_text"]: what people decided about the generated text is what auto-approval
    learns from (services.auto_approval.VariantFeatures)."""
    held = dict(sample.scores or {})
    generated = held.get(GENERATED_TEXT_SCORES)
    first_edit = sample.generated_text is None
    if first_edit or generated is None or "similarity" not in generated:
        # At the first edit, the row's scores are the generated text's. A variant first edited before the
        # n-gram scores were recomputed still has the generated text's n-gram scores on its row: they join what
        # is held (its model scores, where they were kept apart). One edited before any were kept apart may
        # have model scores a later run computed on the edited text: unknown, not the generated text's.
        model = {name: getattr(sample, name) if first_edit else None for name in MODEL_SCORE_COLUMNS}
        current = {
            **model,
            **{name: getattr(sample, name) for name in TEXT_SCORE_COLUMNS},
            **{key: held[key] for key in TEXT_SCORE_KEYS if key in held},
        }
        held[GENERATED_TEXT_SCORES] = {**current, **(generated or {})}
    for key in (*MODEL_SCORE_KEYS, *TEXT_SCORE_KEYS):
        held.pop(key, None)
    held.update(leakage=closest.jaccard, containment=closest.containment)
    similarity = None
    parent = session.get(Sample, sample.parent_id) if sample.parent_id is not None else None
    if parent is not None:
        ngrams = NgramIndex(leak_guard.NGRAM)
        (a, a_sizes), (b, b_sizes) = ngrams.vectors([text]), ngrams.vectors([parent.text])
        similarity = round(float(pairwise_jaccard(a, a_sizes, b, b_sizes)[0]), 4)
        ratio = len(normalize_text(text)) / max(1, len(normalize_text(parent.text)))
        held.update(similarity=similarity, length_ratio=round(ratio, 4))
    return {**dict.fromkeys(MODEL_SCORE_COLUMNS), "similarity": similarity, "novelty": None, "scores": held}


# A class's flag threshold is read from at least this many of its val texts (fewer: the model's other label flags)
MIN_VAL_TEXTS = 5


@dataclass
class LabelScore:
    consistency: float | None
    flag: bool | None
    changed: dict[str, str] = field(default_factory=dict)  # task → the label the model is confident of
    probs: dict[str, dict[str, float]] = field(default_factory=dict)
    # task → the label the model gives, where the variant still looks like its class (no flag)
    unheeded: dict[str, str] = field(default_factory=dict)
    flagged: list[str] = field(default_factory=list)  # the tasks that flag (the card shows the scorer's own)


def label_scores(
    tasks: Sequence[Any],
    probs: dict[str, np.ndarray],
    labels: Sequence[dict[str, str]],
    *,
    confidence: float = 1.0,
    predicted: dict[str, np.ndarray] | None = None,
    flag_below: dict[str, dict[str, float]] | None = None,
) -> list[LabelScore]:
    """Per text: consistency (the lowest probability of an intended label), flag and confident changes, from
    per-task probabilities (N, K) and each text's intended labels. A task flags where its intended class's
    probability is below `flag_below[task][label]` (services.label_model.scorer_of), else, where that threshold
    is unknown, where the model gives another label: `predicted`, the label index per task and text under its
    decision rule (default: the argmax). A confident change is a flagged task whose other label is at least
    `confidence` probable. Tasks the model does not know, or labels it lacks, are left out."""
    out = []
    for i, wanted in enumerate(labels):
        intended: list[float] = []
        flag = False
        changed: dict[str, str] = {}
        unheeded: dict[str, str] = {}
        flagged_tasks: list[str] = []
        for t in tasks:
            label = wanted.get(t.name)
            if label is None or label not in t.labels:
                continue
            k = t.labels.index(label)
            row = probs[t.name][i]
            intended.append(float(row[k]))
            top = int(predicted[t.name][i]) if predicted is not None else int(np.argmax(row))
            threshold = ((flag_below or {}).get(t.name) or {}).get(label)
            flagged = top != k if threshold is None else float(row[k]) < threshold
            if not flagged:
                if top != k:
                    unheeded[t.name] = t.labels[top]
                continue
            flag = True
            flagged_tasks.append(t.name)
            if top != k and float(row[top]) >= confidence:
                changed[t.name] = t.labels[top]
        as_json = {
            t.name: {name: round(float(probs[t.name][i, j]), 6) for j, name in enumerate(t.labels)} for t in tasks
        }
        consistency = min(intended) if intended else None
        out.append(LabelScore(consistency, flag if intended else None, changed, as_json, unheeded, flagged_tasks))
    return out


@dataclass
class LabelModel:
    """A finished run or ensemble, ready to score texts (its predictor loads on first use, once per process)."""

    spec: Any  # services.prediction.ModelSpec
    # What its scores say about it (services.label_model.scorer_of: kind, name, val macro-F1, chosen by a
    # person): a later run replaces them only where it is better.
    scorer: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> int:
        return int(self.spec.id)

    def score(
        self,
        texts: list[str],
        labels: Sequence[dict[str, str]],
        *,
        confidence: float,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> list[LabelScore]:
        from services.prediction import load_predictor

        if not texts:
            return []
        predictor = load_predictor(self.spec)
        probs = predictor.predict_proba(texts, on_batch=on_batch)
        return label_scores(
            predictor.tasks,
            probs,
            labels,
            confidence=confidence,
            predicted=predictor.decide(probs),
            flag_below=self.scorer.get("flag_below"),
        )


def label_model_for(session: Session, dataset: Dataset, pinned: int | None = None) -> LabelModel | None:
    """The model that scores the dataset's new variants: the pinned run (variant settings), else its latest
    finished run or ensemble; None when none has finished. A pinned model that is gone is an error to show,
    not a reason to score with another."""
    from services.label_model import scorer_of
    from services.prediction import check_label_sets, label_set_problem, model_spec

    if pinned:
        spec = model_spec(session, pinned, None, field_name="label_model_id")
        check_label_sets(spec, dataset, "label_model_id")  # classes renamed since it was pinned: an error to show
        # chosen by a person, but as a setting that can be taken back (unpinned, its scores are no choice that
        # a better run must leave alone: services.label_model.automatic_rule)
        return LabelModel(spec, {**scorer_of(db_runs.get_run(session, pinned), chosen=True), "pinned": True})

    # the latest finished run or ensemble that learnt the dataset's classes as they are (one trained before a
    # class was renamed or merged would score, flag and reject for classes that are gone)
    for run in db_runs.finished_runs_newest_first(session, dataset.id):
        try:
            spec = model_spec(session, run.id, None)
        except ValidationFailed:  # its saved model was removed: as if it had not finished
            continue
        if label_set_problem(spec, dataset) is None:
            return LabelModel(spec, scorer_of(run))
    return None
