"""Automatic decisions beside people's: an auto-approval or the label model's rejection holds until a person
decides and a person who decides overrides it, whatever k; the rule never approves a text a person rewrote; the
automatic reviewer is no annotator; agreement counts the votes the statuses count; and what a pseudo-label's
undo and a one-rejection calibration did wrong. (Found by reading, reproduced here.)"""

from __future__ import annotations

from typing import Any

import numpy as np

from tests.review_fixtures import add_variant, carol, review_data  # noqa: F401 (fixtures)
from tests.test_review_api import decide


def undo(client: Any, sample_id: int, version: int) -> Any:
    return client.post(f"/api/v1/samples/{sample_id}/undo", json={"version": version})


def training_ids(engine: Any) -> set[int]:
    from db.datasets import get_dataset, training_samples
    from db.session import session_scope

    with session_scope(engine) as s:
        return {x.id for x in training_samples(s, get_dataset(s, "rev"))}


def decide_automatically(engine: Any, ids: list[int], outcome: str = "approved") -> None:
    from db.augmentation import AutomaticDecision, record_automatic_decisions
    from db.auth import automatic_reviewer
    from db.session import session_scope

    with session_scope(engine) as s:
        record_automatic_decisions(
            s, automatic_reviewer(s).id, [AutomaticDecision(i, outcome, note="rule") for i in ids]
        )


def test_people_decide_an_automatically_decided_variant_a_rejection_alone_an_approval_by_k(
    admin: Any, annotator: Any, carol: Any, engine: Any, review_data: Any
) -> None:
    """At k = 2 one person agreeing with an auto-approval sent it back to pending (out of training), and one
    disagreeing decided nothing: their vote was counted as one of two. The rule stood in for the k reviews:
    short of k's majority a person's rejection decides, agreeing keeps it, and overturning a rejection takes k's
    majority as approving any variant does; a text a person rewrote is judged under k alone."""
    kept, overruled, undone = review_data.variants[review_data.sources[0]][:3]
    rejected, rewritten = review_data.variants[review_data.sources[1]][:2]
    decide_automatically(engine, [kept, overruled, undone, rewritten])
    decide_automatically(engine, [rejected], "rejected")  # the label model's rejection
    assert admin.patch("/api/v1/datasets/rev", json={"reviews_required": 2}).status_code == 200
    assert {kept, overruled, undone} <= training_ids(engine)  # raising k leaves the rule's decisions as they are
    assert decide(annotator, kept, "approve").json()["review_status"] == "approved"
    assert decide(annotator, overruled, "reject", reason="meaning_changed").json()["review_status"] == "rejected"
    assert decide(carol, rejected, "approve").json()["review_status"] == "pending"  # back to people
    assert decide(annotator, rejected, "approve").json()["review_status"] == "approved"  # k's majority
    voted = decide(annotator, undone, "reject", reason="meaning_changed").json()
    assert voted["review_status"] == "rejected"
    back = undo(annotator, undone, voted["version"])
    assert back.status_code == 200 and back.json()["review_status"] == "approved"  # the rule's decision again
    edited = decide(annotator, rewritten, "edit", text="Proud to stand with the corn growers of Iowa.").json()
    assert edited["review_status"] == "pending"  # a person's text: two people under k = 2
    trains = training_ids(engine)
    assert {kept, undone, rejected} <= trains and not {overruled, rewritten} & trains
    # lowering k back re-evaluates with the same rule; the rewritten text is its writer's, and even at k = 1 it
    # waits for someone else's approval
    moved = admin.patch("/api/v1/datasets/rev", json={"reviews_required": 1}).json()
    assert training_ids(engine) == trains, moved
    assert decide(carol, rewritten, "approve").json()["review_status"] == "approved"
    assert training_ids(engine) == trains | {rewritten}


def test_auto_approval_leaves_a_text_a_person_rewrote_to_people(
    admin: Any, annotator: Any, engine: Any, review_data: Any
) -> None:
    """At k = 2 an editor edits (pending, one vote), approves the same card, then undoes: the undo withdraws the
    approval, the text stays theirs with no vote. The rule scored the generated text; it approved theirs."""
    from db.datasets import get_dataset
    from db.session import session_scope
    from services.auto_approval import apply_to_pending
    from services.variant_settings import locked_settings, store

    admin.patch("/api/v1/datasets/rev", json={"reviews_required": 2})
    rewritten = []
    for i, v in enumerate(review_data.variants[review_data.sources[1]][:3]):
        text = f"Proud to shake hands with Iowa corn growers, take {i}."
        r = decide(annotator, v, "edit", text=text)
        r = decide(annotator, v, "approve", r.json()["version"])
        r = undo(annotator, v, r.json()["version"])
        assert r.status_code == 200 and (r.json()["review_status"], r.json()["text"]) == ("pending", text), r.text
        rewritten.append(v)
    untouched = review_data.variants[review_data.sources[2]][0]
    with session_scope(engine) as s:
        ds = get_dataset(s, "rev")
        settings = locked_settings(s, ds)
        settings.auto_approval = _rule_approving_everything()
        store(s, ds, settings)
    with session_scope(engine) as s:
        apply_to_pending(s, get_dataset(s, "rev"))
    trains = training_ids(engine)
    assert not set(rewritten) & trains
    assert untouched in trains or untouched in _audited(engine)  # the rule still decides what it scored


def _rule_approving_everything() -> dict[str, Any]:
    """A stored rule whose model scores every variant 0.99995 (an intercept of 10), every method and score in
    its scope: what people approving everything they saw would switch on."""
    from services.auto_approval import SCORE_FEATURES, feature_names
    from workers.augment.catalog import METHODS

    n = len(feature_names())
    return {
        "enabled": True,
        "target": 0.95,
        "confidence": 0.95,
        "audit_share": 0.02,
        "min_reviewed": 50,
        "min_selected": 20,
        "version": 1,
        "threshold": 0.5,
        "scope": {
            "minimum": 20,
            "methods": dict.fromkeys(METHODS, 100),
            "scores": {f: {"present": 100, "missing": 100, "only_value": None} for f in SCORE_FEATURES},
        },
        "model": {
            "features": feature_names(),
            "medians": [0.0] * n,
            "indicators": [],
            "mean": [0.0] * n,
            "scale": [1.0] * n,
            "coef": [0.0] * n,
            "intercept": 10.0,
        },
    }


def _audited(engine: Any) -> set[int]:
    from sqlalchemy import select

    from db.models import Sample
    from db.session import session_scope

    with session_scope(engine) as s:
        return set(s.scalars(select(Sample.id).where(Sample.auto_decision == "audit")))


def test_one_rejection_among_the_reviewed_gives_a_rule_that_applies_what_it_measured() -> None:
    """With one rejected variant nothing can be held out: every "held-out" score was the full model's score of
    whichever row came first, the threshold that score, and the deployed model approved an arbitrary share of
    what the numbers (every variant) said."""
    from services.auto_approval import ApprovalModel, choose_threshold, feature_names, held_out_scores

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, len(feature_names())))
    y = np.ones(200, dtype=int)
    y[199] = 0
    chosen = choose_threshold(held_out_scores(x, y, folds=5, seed=0), y, target=0.95, confidence=0.95, min_selected=30)
    assert chosen is not None and (chosen["selected"], chosen["threshold"]) == (200, 0.0)
    deployed = ApprovalModel.fit(x, y, 0).score(x) >= chosen["threshold"]
    assert deployed.mean() == chosen["selected"] / 200  # it approves what its numbers measured


def test_undoing_the_edit_of_a_pseudo_label_restores_its_text(annotator: Any, engine: Any, review_data: Any) -> None:
    """A pseudo-label holds its parent's text under a hash of its own: the undo's restored text was checked under
    the parent's hash and refused as a duplicate of the parent (409), every time."""
    from db.models import Sample, SampleLabel
    from db.session import session_scope
    from db.training_runs import pseudo_label_hash

    with session_scope(engine) as s:
        parent = s.get_one(Sample, review_data.sources[2])
        label = Sample(
            dataset_id=parent.dataset_id,
            text=parent.text,
            split="train",
            origin="pseudo_label",
            content_hash=pseudo_label_hash(parent.content_hash),
            parent_id=parent.id,
            method="pseudo_label",
            review_status="pending",
        )
        label.labels_rows = [
            SampleLabel(task="bias", label="neutral"),
            SampleLabel(task="message", label="mobilization"),
        ]
        s.add(label)
        s.flush()
        label_id, parent_text, hashed = label.id, parent.text, label.content_hash
    edited = decide(annotator, label_id, "edit", text="Join us at the rally on Sunday!")
    assert edited.status_code == 200, edited.text
    back = undo(annotator, label_id, edited.json()["version"])
    assert back.status_code == 200, back.text
    assert back.json()["text"] == parent_text
    with session_scope(engine) as s:
        assert s.get_one(Sample, label_id).content_hash == hashed


def test_the_automatic_reviewer_is_no_annotator(annotator: Any, engine: Any, review_data: Any) -> None:
    decide_automatically(engine, review_data.variants[review_data.sources[3]][:3])
    assert decide(annotator, review_data.variants[review_data.sources[4]][0], "approve").status_code == 200
    rows = annotator.get("/api/v1/datasets/rev/annotators").json()["annotators"]
    assert [r["user"] for r in rows] == ["bob-annotator"], rows


def test_agreement_counts_the_votes_the_statuses_count(
    admin: Any, annotator: Any, carol: Any, review_data: Any
) -> None:
    """An edit withdraws the votes cast on the text before it (they judged another text): the status and each
    annotator's figure left them out, the pairs' kappa and the overall alpha counted them."""
    admin.patch("/api/v1/datasets/rev", json={"reviews_required": 2})
    v = review_data.variants[review_data.sources[4]][0]
    assert decide(carol, v, "reject", reason="meaning_changed").status_code == 200
    assert decide(annotator, v, "edit", text="Watch my CNN interview late tonight.").status_code == 200
    assert admin.get("/api/v1/datasets/rev/agreement").json()["overall"]["pairs"] == []
    assert decide(carol, v, "approve").status_code == 200  # on the edited text: both now agree
    pairs = admin.get("/api/v1/datasets/rev/agreement").json()["overall"]["pairs"]
    assert [(p["n"], p["agreement"]) for p in pairs] == [(1, 1.0)], pairs


def test_an_edit_is_no_approval_of_the_generated_text_for_the_rule(
    annotator: Any, carol: Any, engine: Any, review_data: Any
) -> None:
    """The rule approves generated texts as they are: a variant a person had to rewrite counted as approved in its
    calibration (it learned to approve, unedited, what people edit) and as agreement in its audit."""
    from sqlalchemy import update

    from db.datasets import get_dataset
    from db.models import Sample
    from db.session import session_scope
    from services.auto_approval import agreement, reviewed_variants

    kept, rewritten, dropped = review_data.variants[review_data.sources[0]][:3]
    with session_scope(engine) as s:  # the three were audited: the rule would have approved them
        s.execute(update(Sample).where(Sample.id.in_([kept, rewritten, dropped])).values(auto_decision="audit"))
    assert decide(annotator, kept, "approve").json()["review_status"] == "approved"
    edited = decide(annotator, rewritten, "edit", text="Proud to stand with Iowa's corn growers today.").json()
    assert edited["review_status"] == "pending"  # the annotator's own text: another member approves it
    assert decide(carol, rewritten, "approve", edited["version"]).json()["review_status"] == "approved"
    assert decide(annotator, dropped, "reject", reason="meaning_changed").json()["review_status"] == "rejected"
    with session_scope(engine) as s:
        ds = get_dataset(s, "rev")
        _features, approved = reviewed_variants(s, ds)
        measured = agreement(s, ds)
    assert (len(approved), int(approved.sum())) == (3, 1)
    assert (measured["audit_decided"], measured["audit_approved"]) == (3, 1)
