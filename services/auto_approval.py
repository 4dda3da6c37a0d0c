"""Calibrated auto-approval: approve a new variant without a person when the variants people already reviewed
say that at least a target share of variants like it would have been approved.

The rule, computed when a lead switches it on (and shown there with its numbers):
1. Every augmented variant that people decided (approved, edited or rejected by a person) is a training row:
   its scores at creation (semantic similarity, n-gram similarity, novelty, length ratio, the label model's
   consistency and flag, the method) → approved or not. A logistic regression turns them into an approval
   score (missing scores imputed by the median, with a missing-indicator column).
2. The threshold is chosen on held-out scores (5-fold cross-validation: no variant scores itself): the lowest
   threshold such that, among reviewed variants at or above it, the one-sided Clopper–Pearson lower bound
   (confidence 95% by default) of the approved share is at least the target (95% by default), with at least
   `min_selected` variants above it. No such threshold, or fewer than `min_reviewed` reviewed variants: the
   rule cannot be switched on, and the answer says why with the numbers.
3. New variants scoring at or above it are approved by the reviewer "auto" (an automatic review row, never a
   vote), except a random `audit_share` of them, which stay pending for people (marked `audit`): their
   decisions measure how often people agree with the rule, reported beside it.

The rule decides only what the reviewed variants showed it (its `scope`, recorded when it is fitted); anything
else stays with people, with the reason (`screen`):
- a variant the label model flags as changing a label (`label_flag` true), whatever its score, and one it
  gives another label without flagging it (`scores.label_model.unheeded`: its probability for the intended class
  is within what the class's val texts get, services.variant_scoring), which was flagged before 2026-12-07 and
  which no rule fitted on agreed variants measured;
- a variant of a method with fewer than `min_selected` reviewed variants when the rule was fitted;
- a variant with a score that fewer than `min_selected` reviewed variants had (label-model scores that appeared
  after the rule was fitted), without a score that fewer than `min_selected` of them lacked, or with another value
  of a score that never varied among them (a length ratio of 1.99 where every one had 1.0). The fitted model gives
  such a score a weight of 0 or imputes it: scoring the variant would judge it on evidence nobody reviewed.
The threshold's numbers are measured on the reviewed variants the rule could decide (inside its scope, not
flagged), so they describe the variants it approves.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.errors import ConflictError
from core.inputs import InputModel
from db.models import Dataset, Origin, ReviewStatus, Sample, User, utcnow
from services.access import Need
from services.variant_scoring import GENERATED_TEXT_SCORES, MODEL_SCORE_COLUMNS, TEXT_SCORE_COLUMNS
from services.variant_settings import VariantSettings, locked_settings, store, variant_settings
from workers.augment.base import derive_seed
from workers.augment.catalog import METHODS

SCORE_FEATURES = ("semantic_similarity", "similarity", "novelty", "length_ratio", "label_consistency", "label_flag")
PARAMETERS = ("target", "confidence", "audit_share", "min_reviewed", "min_selected")


class AutoApprovalRequest(InputModel):
    """A rule's parameters, with floors: a rule that approves without people must promise at least 80% at 80%
    confidence and keep people auditing some of it. At those floors a selection needs 8 reviewed variants, all
    approved, for its lower bound to reach the target (0.2 ** (1 / 8) ≥ 0.8 > 0.2 ** (1 / 7)); `min_selected` 20
    leaves room for rejections, and it is also how many reviewed variants a method (or a kind of score) needs
    before the rule decides variants of it."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    enabled: bool = True
    target: float = Field(default=0.95, ge=0.8, le=0.999, description="share of auto-approvals people approve")
    confidence: float = Field(default=0.95, ge=0.8, le=0.999, description="of the one-sided lower bound")
    audit_share: float = Field(default=0.1, ge=0.02, le=1.0, description="auto-approvals still left to people")
    min_reviewed: int = Field(default=200, ge=50, le=1_000_000, description="reviewed variants needed first")
    min_selected: int = Field(
        default=30,
        ge=20,
        le=1_000_000,
        description="reviewed variants above the threshold, and reviewed variants of a method the rule decides",
    )

    @field_validator("min_selected")
    @classmethod
    def _within_reviewed(cls, value: int, info: ValidationInfo) -> int:
        reviewed = info.data.get("min_reviewed")
        if reviewed is not None and value > reviewed:
            raise ValueError(f"at most min_reviewed ({reviewed}): the selection is made of reviewed variants")
        return value


@dataclass
class VariantFeatures:
    semantic_similarity: float | None
    similarity: float | None
    novelty: float | None
    length_ratio: float | None
    label_consistency: float | None
    label_flag: bool | None
    method: str | None
    # the label model gives another label it does not flag (services.variant_scoring: `unheeded`)
    label_disputed: bool = False

    @classmethod
    def of(cls, sample: Any) -> VariantFeatures:
        """The generated text's scores: an edited variant keeps its model scores from before the first edit
        (services.variant_scoring.text_changed_values), as what people judged was that text."""
        scores = sample.scores or {}
        # Variants edited before the n-gram scores were recomputed at an edit hold only the model scores there:
        # their columns still describe the generated text.
        held = scores.get(GENERATED_TEXT_SCORES) or {}
        current = {name: getattr(sample, name) for name in (*MODEL_SCORE_COLUMNS, *TEXT_SCORE_COLUMNS)}
        generated = {**current, "length_ratio": scores.get("length_ratio"), **held}
        return cls(
            generated.get("semantic_similarity"),
            generated.get("similarity"),
            generated.get("novelty"),
            generated.get("length_ratio"),
            generated.get("label_consistency"),
            generated.get("label_flag"),
            sample.method,
            disputed(scores),
        )

    def row(self) -> list[float]:
        values = [getattr(self, name) for name in SCORE_FEATURES]
        numbers = [math.nan if v is None else float(v) for v in values]
        return numbers + [1.0 if self.method == m else 0.0 for m in METHODS]


def feature_names() -> list[str]:
    return [*SCORE_FEATURES, *(f"method={m}" for m in METHODS)]


def rows(features: Sequence[VariantFeatures]) -> np.ndarray:
    return np.array([f.row() for f in features], dtype=float).reshape(len(features), len(feature_names()))


def lower_bound(approved: int, n: int, confidence: float) -> float:
    """One-sided Clopper–Pearson lower bound of a binomial share (0 when n is 0)."""
    from scipy.stats import beta

    if n == 0 or approved == 0:
        return 0.0
    return float(beta.ppf(1.0 - confidence, approved, n - approved + 1))


def interval(approved: int, n: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """Two-sided Clopper–Pearson interval (scipy's exact binomial test)."""
    from scipy.stats import binomtest

    if n == 0:
        return None
    ci = binomtest(approved, n).proportion_ci(confidence_level=confidence, method="exact")
    return float(ci.low), float(ci.high)


class ApprovalModel:
    """Median imputation with missing indicators, standardisation and a logistic regression, kept as plain
    numbers (JSON in the dataset's settings), so that scoring needs neither pickles nor scikit-learn."""

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params
        self.medians = np.asarray(params["medians"], dtype=float)
        self.indicators = list(params["indicators"])
        self.mean = np.asarray(params["mean"], dtype=float)
        self.scale = np.asarray(params["scale"], dtype=float)
        self.coef = np.asarray(params["coef"], dtype=float)
        self.intercept = float(params["intercept"])

    @staticmethod
    def design(x: np.ndarray, medians: np.ndarray, indicators: Sequence[int]) -> np.ndarray:
        missing = np.isnan(x)
        filled = np.where(missing, medians, x)
        return np.hstack([filled, missing[:, list(indicators)].astype(float)])

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, seed: int = 0) -> ApprovalModel:
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        empty = np.all(np.isnan(x), axis=0)  # a score nobody has yet (no label model): imputed as 0
        medians = np.zeros(x.shape[1])
        if (~empty).any():
            medians[~empty] = np.nanmedian(x[:, ~empty], axis=0)
        indicators = [j for j in range(x.shape[1]) if np.isnan(x[:, j]).any()]
        design = cls.design(x, medians, indicators)
        scaler = StandardScaler().fit(design)
        scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
        if len(set(y.tolist())) < 2:  # everyone approved (or rejected) everything: a constant score
            coef, intercept = np.zeros(design.shape[1]), (10.0 if y.all() else -10.0)
        else:
            lr = LogisticRegression(C=1.0, max_iter=2000, random_state=seed).fit((design - scaler.mean_) / scale, y)
            coef, intercept = lr.coef_[0], float(lr.intercept_[0])
        return cls(
            {
                "features": feature_names(),
                "medians": medians.tolist(),
                "indicators": indicators,
                "mean": scaler.mean_.tolist(),
                "scale": scale.tolist(),
                "coef": np.asarray(coef).tolist(),
                "intercept": intercept,
            }
        )

    def score(self, x: np.ndarray) -> np.ndarray:
        if x.shape[0] == 0:
            return np.zeros(0)
        z = (self.design(x, self.medians, self.indicators) - self.mean) / self.scale
        probability: np.ndarray = 1.0 / (1.0 + np.exp(-(z @ self.coef + self.intercept)))
        return probability


def held_out_scores(x: np.ndarray, y: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Each reviewed variant scored by a model fitted without it (stratified k-fold)."""
    from sklearn.model_selection import StratifiedKFold

    out = np.zeros(len(y))
    n_splits = min(folds, int(min(np.bincount(y.astype(int), minlength=2))))
    if n_splits < 2:
        # One class, or one variant of the other: nothing can be held out, so no score can be measured. Every
        # variant scores 0: a threshold can only take them all, and then it is 0, so the rule applies what was
        # measured (all of them). The score of whichever row came first was the threshold once, and the model
        # fitted on all of them then approved an arbitrary share of what the numbers said it would approve.
        return np.zeros(len(y))
    for train, test in StratifiedKFold(n_splits, shuffle=True, random_state=seed).split(x, y):
        out[test] = ApprovalModel.fit(x[train], y[train], seed).score(x[test])
    return out


def choose_threshold(
    scores: np.ndarray, approved: np.ndarray, *, target: float, confidence: float, min_selected: int
) -> dict[str, Any] | None:
    """The lowest threshold reached from the strictest down, each selection (scores ≥ it, at least
    `min_selected` variants) keeping the lower bound of its approved share at or above the target, before the
    first that does not; None if the strictest does not.

    Fixed-sequence testing: the thresholds are tried in an order fixed before looking (strictest first) and the
    walk stops at the first failure, so the chosen selection's bound holds at `confidence` although many were
    tried. Taking the lowest that passes anywhere (as once) picked, among up to n tries, one whose bound passed
    by chance past a failing one: the bound it showed was optimistic. The walk starts at the smallest selection
    that could pass at all (all approved: (1 − confidence)^(1/n) ≥ target, 59 variants at 95%/95%): one too
    small to reach the target whatever people decided is no test, and would end every walk at its first step."""
    from scipy.stats import beta

    order = np.argsort(-scores, kind="stable")
    s, a = scores[order], approved[order].astype(int)
    sizes = np.arange(1, len(s) + 1)
    hits = np.cumsum(a)
    # A threshold takes every variant with its score: only the last of a run of equal scores is a cut.
    testable = len(s) + 1
    if 0 < target < 1:  # settled with the same quantile the walk computes, where rounding could differ
        testable = max(1, math.ceil(math.log(1.0 - confidence) / math.log(target)))
        while beta.ppf(1.0 - confidence, testable, 1) < target:
            testable += 1
        while testable > 1 and beta.ppf(1.0 - confidence, testable - 1, 1) >= target:
            testable -= 1
    tried = np.flatnonzero(np.r_[s[1:] != s[:-1], True] & (sizes >= max(min_selected, testable)))
    bound = np.zeros(len(s))  # 0 where nothing selected was approved (the beta quantile is undefined there)
    some = tried[hits[tried] > 0]
    bound[some] = beta.ppf(1.0 - confidence, hits[some], sizes[some] - hits[some] + 1)
    failed = np.flatnonzero(bound[tried] < target)
    passed = int(failed[0]) if failed.size else tried.size  # the walk's length before its first failure
    if passed == 0:
        return None
    m = int(tried[passed - 1])
    return {
        "threshold": float(s[m]),
        "selected": m + 1,
        "selected_approved": int(hits[m]),
        "precision": float(hits[m] / (m + 1)),
        "lower_bound": float(bound[m]),
    }


def scope_of(features: Sequence[VariantFeatures], minimum: int) -> dict[str, Any]:
    """What the reviewed variants showed the rule: how many of each method, and per score how many had it, how
    many lacked it and its only value if it never varied. `minimum` of a kind is evidence (`min_selected`)."""
    x = rows(features)
    scores: dict[str, dict[str, Any]] = {}
    for j, name in enumerate(SCORE_FEATURES):
        present = x[~np.isnan(x[:, j]), j]
        values = np.unique(present)
        scores[name] = {
            "present": int(present.size),
            "missing": int(len(x) - present.size),
            "only_value": float(values[0]) if values.size == 1 else None,
        }
    methods: dict[str, int] = {}
    for f in features:
        methods[str(f.method)] = methods.get(str(f.method), 0) + 1
    return {"minimum": minimum, "methods": dict(sorted(methods.items())), "scores": scores}


FLAGGED = "the label model says it changes a label: people decide"
DISPUTED = "the label model gives another label (no flag: it scores the class as its val texts get): people decide"


def disputed(scores: dict[str, Any] | None) -> bool:
    """Whether a variant's label-model score holds another label it does not flag (`unheeded`)."""
    return bool(((scores or {}).get("label_model") or {}).get("unheeded"))


def outside(scope: dict[str, Any], features: VariantFeatures) -> str | None:
    """Why the rule may not decide this variant (it goes to people), or None when the reviewed variants the
    rule was fitted on cover it."""
    if features.label_flag:
        return FLAGGED
    if features.label_disputed:
        return DISPUTED
    minimum = int(scope["minimum"])
    reviewed = int(scope["methods"].get(str(features.method), 0))
    if reviewed < minimum:
        return f"method {features.method}: {reviewed} reviewed variants when the rule was fitted, fewer than {minimum}"
    for name, value in zip(SCORE_FEATURES, features.row(), strict=False):
        seen = scope["scores"][name]
        if math.isnan(value):
            if seen["missing"] < minimum:
                return f"no {name}: {seen['missing']} reviewed variants lacked one when the rule was fitted"
        elif seen["present"] < minimum:
            return f"{name}: {seen['present']} reviewed variants had one when the rule was fitted"
        elif seen["only_value"] is not None and value != seen["only_value"]:
            return f"{name} {value:g}: every reviewed variant the rule was fitted on had {seen['only_value']:g}"
    return None


def describe_scope(scope: dict[str, Any]) -> str:
    """The scope in words: "it decides only variants of wordnet (220 reviewed) with similarity, novelty,
    length_ratio = 1, without semantic_similarity, ... and never one the label model flags: ..."."""
    minimum = int(scope["minimum"])
    methods = [f"{m} ({n} reviewed)" for m, n in scope["methods"].items() if n >= minimum]
    with_: list[str] = []
    without: list[str] = []
    either: list[str] = []
    for name, seen in scope["scores"].items():
        shown = name if seen["only_value"] is None else f"{name} = {seen['only_value']:g}"
        if seen["present"] < minimum:
            without.append(name)
        elif seen["missing"] < minimum:
            with_.append(shown)
        else:
            either.append(f"with or without {shown}")
    kinds = ([f"with {', '.join(with_)}"] if with_ else []) + ([f"without {', '.join(without)}"] if without else [])
    return (
        f"it decides only variants of {', '.join(methods) or 'no method'} "
        + "".join(f"{k}, " for k in [*kinds, *either])
        + "and never one the label model flags: the others go to people"
    )


# What the rule predicts and is measured on: a person approved the text the augmenter generated. One they had to
# rewrite first (approved through an edit) was not acceptable as generated: counted as approved, the rule learned
# to approve, unedited, texts people would have edited, and its audit agreement counted them.
APPROVED_AS_GENERATED = (Sample.review_status == ReviewStatus.approved) & Sample.as_generated


def reviewed_variants(session: Session, dataset: Dataset) -> tuple[list[VariantFeatures], np.ndarray]:
    """(features, approved as generated) of the augmented variants people decided."""
    decided = session.scalars(
        select(Sample).where(
            Sample.dataset_id == dataset.id,
            Sample.origin == Origin.augmented,
            Sample.review_count > 0,
            Sample.review_status.in_([ReviewStatus.approved, ReviewStatus.rejected]),
        )
    ).all()
    approved = [s.review_status == ReviewStatus.approved and s.as_generated for s in decided]  # APPROVED_AS_GENERATED
    return [VariantFeatures.of(s) for s in decided], np.array(approved, dtype=int)


def calibrate(session: Session, dataset: Dataset, request: AutoApprovalRequest, seed: int = 0) -> dict[str, Any]:
    """The rule the reviewed variants support now, with its numbers (`ready` False with a reason if none)."""
    features, y = reviewed_variants(session, dataset)
    x = rows(features)
    n, k = len(y), int(y.sum())
    scope = scope_of(features, request.min_selected)
    # The threshold's numbers are measured on the variants the rule may decide: flagged ones and those outside
    # what the reviewed variants showed it go to people whatever their score.
    out_of_scope = [outside(scope, f) for f in features]  # why each goes to people; None: the rule may decide it
    decidable = np.array([why is None for why in out_of_scope], dtype=bool)
    numbers: dict[str, Any] = {
        "reviewed": n,
        "approved": k,
        "approved_share": k / n if n else None,
        "target": request.target,
        "confidence": request.confidence,
        "min_reviewed": request.min_reviewed,
        "min_selected": request.min_selected,
        "audit_share": request.audit_share,
        "decidable": int(decidable.sum()),
        "scope": scope,
    }
    if n < request.min_reviewed:
        return {
            **numbers,
            "ready": False,
            "reason": f"{n} reviewed variants; auto-approval needs at least {request.min_reviewed}",
        }
    if int(decidable.sum()) < request.min_selected:
        # No threshold can pass, whatever the statistics: say why the reviewed variants are out of the rule's
        # scope (all of them flagged by the label model read "no threshold keeps the lower bound", at 99.6%
        # approved)
        why = Counter(reason for reason in out_of_scope if reason is not None)
        shown = "; ".join(f"{count} {reason}" for reason, count in why.most_common(3))
        advice = (
            " Review variants the label model does not flag, or score the pending variants with a better run "
            f"(POST /api/v1/datasets/{dataset.name}/label-model)"
            if any(reason in (FLAGGED, DISPUTED) for reason in why)
            else ""
        )
        return {
            **numbers,
            "ready": False,
            "reason": f"only {int(decidable.sum())} of the {n} reviewed variants are ones the rule may decide (it "
            f"needs {request.min_selected} above its threshold): {shown}.{advice}",
        }
    held = held_out_scores(x, y, folds=5, seed=seed)
    chosen = choose_threshold(
        held[decidable],
        y[decidable],
        target=request.target,
        confidence=request.confidence,
        min_selected=request.min_selected,
    )
    if chosen is None:
        return {
            **numbers,
            "ready": False,
            "reason": f"no threshold keeps the {request.confidence:.0%} lower bound of the approved share at "
            f"{request.target:.0%} with at least {request.min_selected} reviewed variants above it "
            f"(of the {int(decidable.sum())} reviewed variants the rule could decide)",
        }
    model = ApprovalModel.fit(x, y, seed)
    return {
        **numbers,
        "ready": True,
        "reason": None,
        **chosen,
        "coverage": chosen["selected"] / n,
        "model": model.params,
        "rule": (
            f"approve when the approval score is ≥ {chosen['threshold']:.3f}: on held-out reviewed variants, "
            f"{chosen['selected_approved']} of {chosen['selected']} above it were approved by people "
            f"({chosen['precision']:.1%}; {request.confidence:.0%} lower bound {chosen['lower_bound']:.1%} ≥ "
            f"{request.target:.0%}); {request.audit_share:.0%} of them still go to people as an audit; "
            f"{describe_scope(scope)}"
        ),
    }


def configure(session: Session, dataset: Dataset, request: AutoApprovalRequest, user: User | None) -> dict[str, Any]:
    """Switch auto-approval on (calibrating the rule now) or off. On: 409 with the numbers when the reviewed
    variants do not support a rule yet."""
    if not request.enabled:
        settings = locked_settings(session, dataset)
        previous = settings.auto_approval or {}
        settings.auto_approval = {**previous, "enabled": False} if previous else None
        store(session, dataset, settings)
        return status(session, dataset)
    calibration = calibrate(session, dataset, request)  # reads, before the row is held
    settings = locked_settings(session, dataset)
    previous = settings.auto_approval or {}
    if not calibration["ready"]:
        raise ConflictError(
            f"auto-approval stays off: {calibration['reason']}",
            field="enabled",
            extra={"calibration": {k: v for k, v in calibration.items() if k != "model"}},
        )
    settings.auto_approval = {
        **calibration,
        "enabled": True,
        "version": int(previous.get("version", 0)) + 1,
        "created_at": utcnow().isoformat(),
        "created_by": user.name if user else None,
    }
    store(session, dataset, settings)
    return status(session, dataset)


def rule_in(settings: VariantSettings) -> dict[str, Any] | None:
    """The auto-approval rule the settings switch on, if any."""
    rule = settings.auto_approval
    return rule if rule and rule.get("enabled") else None


def not_in_force(rule: dict[str, Any]) -> str | None:
    """Why a stored rule decides nothing (everything goes to people): fitted before its scope was recorded, or
    with parameters below today's floors. Switching it on again refits it."""
    if "scope" not in rule:
        return "the rule was fitted before its scope was recorded; switch auto-approval on again"
    try:
        AutoApprovalRequest.model_validate({k: rule[k] for k in PARAMETERS if k in rule})
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return f"the rule's {where} is outside today's bounds ({first['msg']}); switch auto-approval on again"
    return None


def screen(rule: dict[str, Any], features: Sequence[VariantFeatures]) -> list[str | None]:
    """Per variant, why the rule may not decide it (it goes to people), or None."""
    problem = not_in_force(rule)
    if problem is not None:
        return [problem] * len(features)
    return [outside(rule["scope"], f) for f in features]


def shown_auto_decision(auto_decision: str | None, review_status: str | None) -> str | None:
    """What a client is told of the automatic step on a variant. An audit sample reads like any pending variant
    until people have decided it: a reviewer told that the rule would approve it is primed to agree, and the
    agreement measured on audits would no longer be people's own. Once decided, it says `audit` again."""
    if auto_decision == "audit" and review_status == ReviewStatus.pending:
        return None
    return auto_decision


def decide(rule: dict[str, Any], features: Sequence[VariantFeatures], hashes: Sequence[str]) -> list[str | None]:
    """Per variant: "approved", "audit" (it qualifies; left to people) or None (below the threshold, or outside
    what the rule was fitted on: `screen` says why)."""
    if not features:
        return []
    reasons = screen(rule, features)
    scores = ApprovalModel(rule["model"]).score(rows(features))
    out: list[str | None] = []
    for score, reason, digest in zip(scores, reasons, hashes, strict=True):
        if reason is not None or score < rule["threshold"]:
            out.append(None)
            continue
        draw = derive_seed(int(rule.get("version", 1)), "audit", digest) / 2**63
        out.append("audit" if draw < float(rule.get("audit_share", 0.0)) else "approved")
    return out


def apply_to_pending(session: Session, dataset: Dataset) -> dict[str, int]:
    """Run the active rule over the pending augmented variants nobody has voted on and no automatic step has
    touched yet (made before the rule was switched on), as generated: a text a person rewrote (an edit whose
    vote was then undone leaves it pending, nobody's vote on it) is not what the rule scored, and stays with
    people."""
    from db.augmentation import AutomaticDecision, record_automatic_decisions
    from db.auth import automatic_reviewer

    rule = rule_in(locked_settings(session, dataset))  # as last committed, held: a switch-off waits for this
    if rule is None:
        raise ConflictError("auto-approval is off for this dataset; switch it on first", field="enabled")
    rows = session.scalars(
        select(Sample)
        .where(
            Sample.dataset_id == dataset.id,
            Sample.origin == Origin.augmented,
            Sample.review_status == ReviewStatus.pending,
            Sample.review_count == 0,
            Sample.auto_decision.is_(None),
            Sample.as_generated,
        )
        .order_by(Sample.id)
    ).all()
    features = [VariantFeatures.of(s) for s in rows]
    verdicts = decide(rule, features, [s.content_hash for s in rows])
    decisions = [
        AutomaticDecision(s.id, verdict, note=approval_note(rule))
        for s, verdict in zip(rows, verdicts, strict=True)
        if verdict is not None
    ]
    record_automatic_decisions(session, automatic_reviewer(session).id, decisions)
    # What stays with people, and why: outside what the reviewed variants showed the rule, or below its threshold.
    outside_scope = sum(1 for reason in screen(rule, features) if reason is not None)
    return {
        "considered": len(rows),
        "approved": sum(1 for d in decisions if d.outcome == "approved"),
        "audit": sum(1 for d in decisions if d.outcome == "audit"),
        "outside_scope": outside_scope,
        "below_threshold": len(rows) - len(decisions) - outside_scope,
    }


def approval_note(rule: dict[str, Any]) -> str:
    return f"auto-approved: approval score ≥ {rule['threshold']:.3f} (rule v{rule.get('version', 1)})"


def agreement(session: Session, dataset: Dataset) -> dict[str, Any]:
    """How often people agreed with the rule: on the audited variants they decided (the unbiased measure),
    and how many auto-approved variants a person later rejected."""
    decided = (Sample.review_count > 0) & Sample.review_status.in_([ReviewStatus.approved, ReviewStatus.rejected])
    counts = dict(
        session.execute(
            select(Sample.auto_decision, func.count())
            .where(Sample.dataset_id == dataset.id, Sample.auto_decision.isnot(None))
            .group_by(Sample.auto_decision)
        )
        .tuples()
        .all()
    )

    def count(*conditions: Any) -> int:
        return session.scalar(select(func.count()).where(Sample.dataset_id == dataset.id, *conditions)) or 0

    audit_decided = count(Sample.auto_decision == "audit", decided)
    audit_approved = count(Sample.auto_decision == "audit", decided, APPROVED_AS_GENERATED)
    overruled = count(Sample.auto_decision == "approved", Sample.review_status == ReviewStatus.rejected)
    return {
        "auto_approved": counts.get("approved", 0),
        "auto_rejected": counts.get("rejected", 0),
        "audit_total": counts.get("audit", 0),
        "audit_decided": audit_decided,
        "audit_approved": audit_approved,
        "agreement": audit_approved / audit_decided if audit_decided else None,
        "agreement_ci95": interval(audit_approved, audit_decided),
        "auto_approved_later_rejected": overruled,
    }


def status(session: Session, dataset: Dataset, request: AutoApprovalRequest | None = None) -> dict[str, Any]:
    """The stored rule, what the reviewed variants support now (a preview), and the measured agreement."""
    stored = variant_settings(dataset).auto_approval
    problem = not_in_force(stored) if stored and stored.get("enabled") else None
    try:
        base = request or AutoApprovalRequest(**{k: stored[k] for k in PARAMETERS if stored and k in stored})
    except ValidationError:  # a rule stored before today's floors: the preview is at the defaults
        base = AutoApprovalRequest()
    preview = calibrate(session, dataset, base)

    def strip(d: dict[str, Any] | None) -> dict[str, Any] | None:
        return {k: v for k, v in d.items() if k != "model"} if d else None

    rule = strip(stored)
    if rule is not None and problem is not None:
        rule["reason"] = problem
    return {
        "dataset": dataset.name,
        "enabled": bool(stored and stored.get("enabled")),
        "rule": rule,
        "preview": strip(preview),
        "agreement": agreement(session, dataset),
    }


# The doors name datasets -------------------------------------------------------------------------------


def status_of(session: Session, name: str, user: User | None) -> dict[str, Any]:
    from services.datasets import dataset_named

    return status(session, dataset_named(session, name, user))


def configure_named(session: Session, name: str, request: AutoApprovalRequest, user: User) -> dict[str, Any]:
    """The project's leads."""
    from services.datasets import dataset_named

    return configure(session, dataset_named(session, name, user, Need.lead), request, user)


def apply_named(session: Session, name: str, user: User | None) -> dict[str, int]:
    """The project's leads."""
    from services.datasets import dataset_named

    return apply_to_pending(session, dataset_named(session, name, user, Need.lead))
