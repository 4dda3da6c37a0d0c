"""The Review page's focused flow, Python half: the cards on screen and what the keys and buttons do.

The list of cards is fetched once per dataset, filter and page, then kept in this session's state and patched
card by card: a decision changes the one card it touched (from the API's answer), and the component
(review_ui/static/review_cards.js) redraws only the cards whose data changed. It runs inside an `st.fragment`,
so a decision reruns that fragment alone, never the page.

The component sends its actions as an outbox (every action not yet acknowledged, each with a sequence number);
`handle_outbox` applies the new ones in order and acknowledges them, so no action is lost when two are sent
before the server has answered the first.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from review_ui.client import ApiClient, ApiError
from review_ui.render import NO_WORD_DIFF, diff_segments, provenance, quantity

COMPONENT_KEY = "review_cards"
VIEW_KEY = "_review_view"
REASON_KEYS = 6  # keys 1–6 pick these; "unspecified" is what a rejection without a choice stores
DONE = {"approve": "approved", "reject": "rejected", "edit": "edited and approved"}
_notices = itertools.count(1)


def reason_label(reason: str | None) -> str | None:
    return reason.replace("_", " ") if reason else None


@dataclass
class ReviewView:
    """The cards on screen for one dataset, filter and page, as the API last described each of them."""

    signature: str
    dataset: str
    epoch: int
    order: list[int]
    items: dict[int, dict[str, Any]]
    families: dict[int, dict[str, Any]]
    reasons: list[str]
    reviews_required: int
    family_actions: bool
    total: int = 0
    total_capped: bool = False
    leased_until: str | None = None
    acked: int = 0
    notice: dict[str, Any] | None = None
    focus_request: dict[str, Any] | None = None
    # an edit the API refused, for the card to reopen its editor with the typed text: {seq, id, text}
    refused_edit: dict[str, Any] | None = None
    batch: int | None = None  # the outbox batch being applied: its notices add up (say)
    undo_stack: list[list[int]] = field(default_factory=list)
    built: dict[int, tuple[int, str, dict[str, Any]]] = field(default_factory=dict)  # id → (version, …, card)
    # each family's pending count as the page last showed it (payload): what F's count is read against
    families_shown: dict[int, int] = field(default_factory=dict)
    # the project's pending count when the live panel first ran beside this view: an empty view is read again
    # once the count moves (review_ui/app_pages/review.py live_panel)
    pending_seen: int | None = None

    def say(self, kind: str, text: str) -> None:
        """The notice above the cards. The actions of one outbox batch (keys pressed quickly) each say
        something: a refusal or a warning stays, ahead of what the others said, instead of being replaced by
        the next action's success."""
        earlier = self.notice if self.batch is not None and (self.notice or {}).get("batch") == self.batch else None
        if earlier is not None and earlier["kind"] in ("error", "warning"):
            kind = "error" if "error" in (kind, earlier["kind"]) else "warning"
            text = f"{earlier['text']} · {text}"
        self.notice = {"seq": next(_notices), "kind": kind, "text": text, "batch": self.batch}

    def focus(self, sample_id: int) -> None:
        self.focus_request = {"seq": next(_notices), "id": sample_id}


def load_view(
    api: ApiClient,
    dataset: str,
    signature: str,
    params: dict[str, Any],
    page: int,
    page_size: int,
    *,
    share: dict[str, Any] | None = None,
) -> ReviewView:
    """Fetch a page of the queue (or, for a dataset that shares out work, the caller's leased batch)."""
    if share is not None:
        queue = api.next_batch(dataset, share)
    else:
        queue = api.review_queue(dataset, page=page, page_size=page_size, **params)
    items = {item["id"]: item for item in queue["items"]}
    reasons = [r for r in queue["reject_reasons"] if r != "unspecified"][:REASON_KEYS]
    return ReviewView(
        signature=signature,
        dataset=dataset,
        epoch=next(_notices),
        order=list(items),
        items=items,
        families={f["id"]: f for f in queue["families"]},
        reasons=reasons,
        reviews_required=queue["reviews_required"],
        family_actions=params.get("status", "pending") == "pending",
        total=queue["total"],
        total_capped=queue["total_capped"],
        leased_until=queue.get("leased_until"),
    )


# The component's data -----------------------------------------------------------------------------------


def label_model_view(item: dict[str, Any]) -> dict[str, Any] | None:
    """Which labels the label model predicts per task, against the intended ones, which tasks flag and which
    model said so. A task flags where the intended class's probability is below the scorer's `flag_below` for
    it (what 9 in 10 of the class's val texts get more of: services.variant_scoring.label_scores), or, without
    one, where the model gives another label (under its decision rule); each row says which (`note`) and whether
    it flags, as the scorer recorded it (`flagged`)."""
    scored = (item.get("scores") or {}).get("label_model") or {}
    probs = scored.get("probs") or {}
    tasks = []
    for task, by_label in sorted(probs.items()):
        intended = (item.get("labels") or {}).get(task)
        if intended is None or not by_label:
            continue
        predicted = max(by_label, key=by_label.get)
        below = ((scored.get("flag_below") or {}).get(task) or {}).get(intended)
        p = by_label.get(intended)
        numbers = isinstance(below, int | float) and isinstance(p, int | float)
        recorded = scored.get("flagged")
        if isinstance(recorded, list):  # the scorer's own verdict (its other label is under its decision rule)
            flagged = task in recorded
            disputed = task in (scored.get("unheeded") or {})
        else:  # a score written before the flagged tasks were recorded: read again as the scorer read it
            flagged = p < below if numbers else predicted != intended
            disputed = not flagged and predicted != intended
        note = ""
        if numbers:
            said = f"p({intended}) {p:.3f} {'<' if p < below else '≥'} {below:.3f}, what 9 in 10 of its val texts get"
            note = said if flagged else f"no flag: {said}" if disputed else ""
        tasks.append([task, predicted, intended, f"{by_label[predicted]:.2f}", note, flagged])
    if not tasks:
        return None
    who = f"Label model: {'ensemble' if scored.get('kind') == 'ensemble' else 'run'} #{scored.get('run_id', '?')}"
    if scored.get("val_macro_f1") is not None:
        who += f" (val macro-F1 {scored['val_macro_f1']:.2f})"
    if scored.get("chosen"):
        who += ", chosen by a person"
    return {"who": who, "tasks": tasks, "disagrees": any(t[5] for t in tasks)}


def build_card(item: dict[str, Any], family: dict[str, Any] | None, reviews_required: int) -> dict[str, Any]:
    votes = item.get("votes") or {}
    last = item.get("last_review")
    votes_text = None
    if reviews_required > 1 or votes.get("approve") or votes.get("reject"):
        # the dataset's k beside the votes ("2 keep, 0 drop of 1" read as a fraction after an edit and its approval)
        votes_text = f"votes: {votes.get('approve', 0)} keep, {votes.get('reject', 0)} drop"
        if votes.get("mine"):
            votes_text += f" (yours: {votes['mine']})"
        votes_text += f" · {quantity(reviews_required, 'review')} per variant"
    generated = item.get("generated_text")
    segments = diff_segments(family["text"], item["text"]) if family else [("eq", item["text"])]
    return {
        "id": item["id"],
        "version": item["version"],
        "status": item["review_status"],
        "parent_id": item["parent_id"],
        "text": item["text"],
        "segments": segments if segments is not None else [("eq", item["text"])],
        "diff_note": NO_WORD_DIFF if segments is None else None,
        "provenance": provenance(item),
        "edited_from": generated if generated and generated != item["text"] else None,
        "label_model": label_model_view(item),
        # a card without a source above it (a submitted text) shows its own labels, as a family header does:
        # the submitter's, which its approver must see to approve them
        "labels": sorted((item.get("labels") or {}).items()) if family is None else None,
        "last_review": None
        if not last
        else {
            "decision": last["decision"],
            "reason": last.get("reason"),
            "reason_label": reason_label(last.get("reason")),
            "user": last["user"],
        },
        "votes_text": votes_text,
        "undoable": bool(votes.get("undoable")),  # the Undo button: your vote stands and no one decided since
        "awaiting_other": awaiting_another_member(item, reviews_required),
    }


def awaiting_another_member(item: dict[str, Any], reviews_required: int) -> bool:
    """A rewritten text still pending under k = 1: it trains once someone other than its writer approves it
    (services.review_status.status_of); "waiting for more reviews" said otherwise of a rule that needs no more."""
    generated = item.get("generated_text")
    rewritten = bool(generated) and generated != item.get("text")
    return reviews_required == 1 and item.get("review_status") == "pending" and rewritten


def payload(view: ReviewView, empty: str) -> dict[str, Any]:
    cards = []
    for sample_id in view.order:
        item = view.items[sample_id]
        key = repr((item["version"], item["review_status"], item.get("votes"), item.get("last_review")))
        cached = view.built.get(sample_id)
        if cached is None or cached[1] != key:
            family = view.families.get(item["parent_id"]) if item["parent_id"] is not None else None
            cached = (item["version"], key, build_card(item, family, view.reviews_required))
            view.built[sample_id] = cached
        cards.append(cached[2])
    view.families_shown = {pid: int(f.get("pending_variants", 0)) for pid, f in view.families.items()}
    return {
        "epoch": view.epoch,
        "cards": cards,
        "families": {
            str(pid): {
                "id": f["id"],
                "text": f["text"],
                "split": f["split"],
                "labels": sorted((f.get("labels") or {}).items()),
                "pending": f.get("pending_variants", 0),
            }
            for pid, f in view.families.items()
        },
        "reasons": [[r, reason_label(r)] for r in view.reasons],
        "family_actions": view.family_actions,
        "acked": view.acked,
        "notice": view.notice,
        "focus_request": view.focus_request,
        "refused_edit": view.refused_edit,
        "empty": empty,
    }


# Actions ------------------------------------------------------------------------------------------------


def _replace(view: ReviewView, item: dict[str, Any]) -> None:
    """Take the API's new description of a card; keep the family's pending count in step."""
    old = view.items.get(item["id"])
    if old is None:
        return
    family = view.families.get(item["parent_id"]) if item["parent_id"] is not None else None
    if family is not None and old["review_status"] != item["review_status"]:
        change = (item["review_status"] == "pending") - (old["review_status"] == "pending")
        family["pending_variants"] = max(0, family.get("pending_variants", 0) + change)
    view.items[item["id"]] = {**old, **item}


def _refresh(view: ReviewView, api: ApiClient, ids: list[int]) -> None:
    for item in api.cards(ids) if ids else []:
        _replace(view, item)


def _conflict(view: ReviewView, api: ApiClient, sample_id: int, err: ApiError, doing: str) -> None:
    current = err.body.get("current") or {}
    last = current.get("last_review") or {}
    who = f" by {last['user']}" if last.get("user") else ""
    _refresh(view, api, [sample_id])
    view.say(
        "warning",
        f"Variant #{sample_id} changed since you saw it: it is now {current.get('review_status')}{who}; "
        f"{doing} was not applied. The card shows its current state."
        + (f" Note: {err.body['advice']}." if err.body.get("advice") else "")
        if err.status == 409 and "current" in err.body and "undo" not in doing
        else f"Could not {doing} variant #{sample_id}: {err.detail}",
    )


def apply_action(view: ReviewView, api: ApiClient, action: dict[str, Any]) -> None:
    """One action from the component: decide, approve a family or a selection, or undo."""
    op = action.get("op")
    if op in ("approve", "reject", "edit"):
        sample_id = int(action["id"])
        if sample_id not in view.items:
            return
        reason = (action.get("reason") or "unspecified") if op == "reject" else None
        try:
            item = api.decide(sample_id, op, int(action["version"]), reason=reason, text=action.get("text"))
        except ApiError as err:
            if err.status == 409 and err.body.get("duplicate_of"):
                view.say("error", f"The edited text duplicates sample #{err.body['duplicate_of']}; not saved.")
            else:
                _conflict(view, api, sample_id, err, op)
            # The editor reopens with what was typed whenever the draft is still worth saving: the text itself
            # refused (a duplicate, a near-copy of a val/test text, too long), or nothing saved for a reason of
            # the server's (busy, unreachable: "retry" closed the editor and dropped the draft). Not after a
            # change by someone else (409 on the version), whose card now shows their text: saving the draft
            # again would write over it unseen; nor for a variant that is gone.
            someone_elses = err.status == 409 and not err.body.get("duplicate_of")
            if op == "edit" and action.get("text") and not someone_elses and err.status != 404:
                # with the version it was typed over: the card reopens with it only while still at that version
                # (a 413 or 503 answered before the version was checked, and the draft went over a colleague's edit)
                view.refused_edit = {
                    "seq": next(_notices),
                    "id": sample_id,
                    "text": str(action["text"]),
                    "version": int(action["version"]),
                }
            return
        _replace(view, item)
        view.undo_stack.append([sample_id])
        done, waiting = DONE[op], ""
        if item["review_status"] == "pending":
            done = "edited" if op == "edit" else done
            if op == "edit" or awaiting_another_member(item, view.reviews_required):
                # a rewritten text trains once someone other than its writer approves it (status_of)
                waiting = " (waiting for another member's approval)"
            else:
                waiting = " (waiting for more reviews)"
        stored = f", reason: {reason_label(reason)}" if op == "reject" else ""
        view.say("success", f"Variant #{sample_id} {done}{stored}{waiting}. U undoes it.")
    elif op in ("family", "selected"):
        _bulk(view, api, action)
    elif op == "undo":
        _undo(view, api, action)


def _bulk(view: ReviewView, api: ApiClient, action: dict[str, Any]) -> None:
    if action["op"] == "family":
        parent_id = int(action["parent_id"])
        ids = [i for i in view.order if view.items[i]["parent_id"] == parent_id]
        body: dict[str, Any] = {"decision": "approve", "parent_id": parent_id, "confirm": True}
        if view.reviews_required == 1 and action.get("expected") is not None:
            # the count the button showed, as the actions sent before it left it (A then F before the first
            # answer: the family's count, kept in step by each answer, is one less than the button said, and
            # the family was refused as changed by one's own approval), less the cards on the page that wait
            # with one's own vote (a text one rewrote waits for another member): the server counts the
            # variants one has not voted on. Someone else's change unseen still makes the counts differ.
            family = view.families.get(parent_id)
            own_actions = (
                view.families_shown[parent_id] - int(family.get("pending_variants", 0))
                if family is not None and parent_id in view.families_shown
                else 0
            )
            shown = int(action["expected"]) - own_actions
            mine = sum(
                1
                for i in ids
                if view.items[i]["review_status"] == "pending" and (view.items[i].get("votes") or {}).get("mine")
            )
            body["expected_count"] = shown - mine
        _report(view, "approve", f"the family of source #{parent_id}", [_send(view, api, body, ids, action)])
        return
    ids = [int(i) for i in action.get("ids") or [] if int(i) in view.items]
    decision = "reject" if action.get("decision") == "reject" else "approve"
    reasons = {int(k): str(v) for k, v in (action.get("reasons") or {}).items() if v}
    # Rejected with the reasons picked on the cards: one bulk decision per reason (a bulk decision has one
    # reason), said as one (the last reason's count replaced the others': "Rejected 1 of 3") and undone as one
    groups = (
        {
            reason: [i for i in ids if reasons.get(i, "unspecified") == reason]
            for reason in sorted({reasons.get(i, "unspecified") for i in ids})
        }
        if decision == "reject"
        else {None: ids}
    )
    steps = len(view.undo_stack)
    results = []
    for reason, group in groups.items():
        body = {"decision": decision, "sample_ids": group, "confirm": True}
        if reason is not None:
            body["reason"] = reason
        results.append(_send(view, api, body, group, action))
    done = [i for entry in view.undo_stack[steps:] for i in entry]
    view.undo_stack[steps:] = [done] if done else []
    _report(view, decision, None, results, selected=len(ids))


def _send(
    view: ReviewView, api: ApiClient, body: dict[str, Any], ids: list[int], action: dict[str, Any]
) -> dict[str, Any] | None:
    """One bulk decision; its answer, or None with the refusal said."""
    # Your vote goes only to the texts you saw: a variant someone edited since is left out (and said so).
    body["versions"] = {str(i): int(view.items[i]["version"]) for i in ids}
    try:
        result = api.bulk(view.dataset, body)
    except ApiError as err:
        if err.status == 409 and "matched" in err.body:
            view.say(
                "warning",
                f"The family changed: it now has {quantity(err.body['matched'], 'pending variant')} you may "
                "approve (not voted on by you, not a text you submitted or its variants), not "
                f"{body.get('expected_count', action.get('expected'))}; nothing was changed.",
            )
        else:
            what = (
                f"the family of source #{body['parent_id']}" if "parent_id" in body else quantity(len(ids), "variant")
            )
            view.say("error", f"Could not decide {what}: {err.detail}")
        _refresh(view, api, ids)
        return None
    _refresh(view, api, ids)
    mine = [i for i in ids if (view.items[i].get("votes") or {}).get("undoable")]
    if mine:
        view.undo_stack.append(mine)
    return result


def _report(
    view: ReviewView, decision: str, what: str | None, results: list[dict[str, Any] | None], selected: int = 0
) -> None:
    """What the bulk decisions of one action did, said once (a refusal has been said already): on `what` (a
    family), or on the `selected` variants, counted once ("Rejected 2 selected variants: 2 variants" said it
    twice), and "2 of 3" when fewer were decided."""
    answered = [r for r in results if r is not None]
    if not answered:
        return
    counts: dict[str, int] = {}
    for result in answered:
        for status, n in (result.get("statuses") or {}).items():
            counts[status] = counts.get(status, 0) + int(n)
    statuses = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    changed = [i for result in answered for i in result.get("changed") or []]
    left_out = (
        f" Left out, changed since you saw them or not on this page: {', '.join(f'#{i}' for i in changed[:10])}"
        f"{' …' if len(changed) > 10 else ''}."
        if changed
        else ""
    )
    applied = sum(int(r["applied"]) for r in answered)
    if what is not None:
        what = f"{what}: {quantity(applied, 'variant')}"
    else:
        what = quantity(selected, "selected variant") if applied == selected else f"{applied} of {selected} selected"
    view.say(
        "warning" if changed else "success",
        f"{DONE[decision].capitalize()} {what} ({statuses or 'none changed'}). U undoes it.{left_out}",
    )


def _undo(view: ReviewView, api: ApiClient, action: dict[str, Any]) -> None:
    if action.get("id") is not None:
        ids = [int(action["id"])]
        for entry in view.undo_stack:
            if ids[0] in entry:
                entry.remove(ids[0])
        view.undo_stack = [e for e in view.undo_stack if e]
    elif view.undo_stack:
        ids = view.undo_stack.pop()
    else:  # after a reload or a new batch: your latest standing decision in the dataset, on this page or not
        latest = api.my_latest_decision(view.dataset)
        if latest is None:
            view.say("warning", "Nothing of yours to undo in this dataset.")
            return
        # read it now: its card may have left the page, or show a version from before the decision (made in
        # another tab of yours), which the undo would be refused for
        found = api.cards([latest])
        if not found:
            view.say("warning", "Nothing of yours to undo in this dataset.")
            return
        if latest in view.items:
            _replace(view, found[0])
        else:
            view.items[latest] = found[0]
        ids = [latest]
    undone = []
    for sample_id in ids:
        if sample_id not in view.items:
            continue
        try:
            item = api.undo(sample_id, view.items[sample_id]["version"])
        except ApiError as err:
            _conflict(view, api, sample_id, err, "undo your decision on")
            continue
        _replace(view, item)
        undone.append(sample_id)
    if undone:
        view.focus(undone[0])
        cards = ", ".join(f"#{i}" for i in undone)
        view.say(
            "success",
            f"Undone: your vote on {cards} is withdrawn (recorded as an undo); "
            f"{'it is' if len(undone) == 1 else 'they are'} {view.items[undone[0]]['review_status']} again.",
        )


def handle_outbox() -> None:
    """The component's callback: apply the actions it has not had acknowledged yet, in order."""
    from review_ui.state import client, session_ended

    if session_ended():  # signed out in another tab: nothing is sent as that user (the rerun shows the sign-in)
        return
    view: ReviewView | None = st.session_state.get(VIEW_KEY)
    state = st.session_state.get(COMPONENT_KEY) or {}
    if view is None:
        return
    api = client()
    view.batch = next(_notices)
    for action in sorted(state.get("outbox") or [], key=lambda a: a.get("seq", 0)):
        seq = int(action.get("seq", 0))
        if seq <= view.acked:
            continue
        try:
            apply_action(view, api, action)
        except ApiError as err:  # the API is unreachable or refused something unexpected
            view.say("error", str(err))
        view.acked = seq
    view.batch = None
