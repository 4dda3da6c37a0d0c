"""The Streamlit pages (streamlit.testing.v1.AppTest) against the real API served by uvicorn on loopback."""

from __future__ import annotations

from typing import Any
from unittest.mock import ANY

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from review_ui.render import plain
from tests.review_fixtures import (  # noqa: F401
    HOSTILE_TEXT,
    add_original,
    add_val_texts,
    issue_token,
    live_api,
    review_data,
)

APP = "../review_ui/app.py"


def signed_in(token: str, role: str, name: str = "someone") -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["token"] = token
    at.session_state["user"] = {"id": 0, "name": name, "role": role}
    return at.run()


def api(live_api: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=live_api + "/api/v1", headers={"Authorization": f"Bearer {token}"})


def status_of(live_api: str, token: str, sample_id: int) -> dict[str, Any]:
    with api(live_api, token) as c:
        return c.get(f"/samples/{sample_id}").json()


def htmls(at: AppTest) -> str:
    return "\n".join(h.proto.body for h in at.html)


def start_button(at: AppTest):  # type: ignore[no-untyped-def]
    return next(b for b in at.button if b.label == "Start training")


def no_errors(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def test_sign_in_keeps_the_token_out_of_the_url(live_api, annotator_token, review_data) -> None:
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert at.title[0].value == "augloop review"
    at.text_input(key="token_input").input("aug_not-a-token")
    at.button[0].click().run()
    assert "refused" in at.error[0].value and "token" not in at.session_state
    at.text_input(key="token_input").input(annotator_token)
    at.button[0].click().run()
    no_errors(at)
    assert at.title[0].value == "Review"
    assert at.session_state["user"]["role"] == "annotator"
    assert dict(at.query_params) == {}
    assert annotator_token not in htmls(at) and all(annotator_token not in m.value for m in at.markdown)
    # The browser gets a one-time ticket to trade for the session cookie (review_ui/server.py), not the token.
    from review_ui import sessions

    ticket = cookie_component(at)["ticket"]
    assert annotator_token not in ticket
    found = sessions.resume(sessions.redeem_ticket(ticket))
    assert found is not None and found[1].token == annotator_token
    at.button(key="sign_out").click().run()
    assert at.title[0].value == "augloop review" and "token" not in at.session_state
    assert cookie_component(at)["sign_out"] is True  # the browser is told to drop the cookie
    assert sessions.resume(sessions._signer.sign(found[0]).decode()) is None  # and the session is gone


def cookie_component(at: AppTest) -> dict[str, Any]:
    import json

    [component] = [c for c in at.get("bidi_component") if c.proto.component_name == "augloop_session_cookie"]
    return json.loads(component.proto.json)


def cards_data(at: AppTest) -> dict[str, Any]:
    """The data the review-card component got (what the browser draws; tests/test_review_browser.py drives it)."""
    import json

    [component] = [c for c in at.get("bidi_component") if c.proto.component_name == "augloop_review_cards"]
    return json.loads(json.loads(component.proto.json))  # the page sends the cards as one JSON string


def test_family_view_renders_user_text_literally(live_api, annotator_token, review_data) -> None:
    at = signed_in(annotator_token, "annotator")
    no_errors(at)
    data = cards_data(at)
    # Every source once as a family header, with its labels; each variant as a word diff with its provenance.
    assert set(data["families"]) == {str(s) for s in review_data.sources}
    first = data["families"][str(review_data.sources[0])]
    assert first["labels"] == [["bias", "partisan"], ["message", "policy"]]
    by_id = {c["id"]: c for c in data["cards"]}
    v = by_id[review_data.variants[review_data.sources[0]][0]]
    assert ["ins", "have to"] in v["segments"] and ["del", "must"] in v["segments"]
    assert v["provenance"].startswith("backtranslation · pivot de · model Helsinki-NLP/opus-mt-en-de · seed 0")
    assert [r[0] for r in data["reasons"]] == [
        "label_changed",
        "meaning_changed",
        "ungrammatical",
        "wrong_language",
        "near_duplicate",
        "other",
    ]
    # Hostile text goes to the component as data, which sets it with textContent (never HTML), and never
    # through Streamlit's markdown.
    assert by_id[review_data.hostile]["text"] == HOSTILE_TEXT
    assert all("evil.example" not in m.value for m in [*at.markdown, *at.caption])
    assert "evil.example" not in htmls(at)
    # The guidelines, written by the project's leads, are text too: their markdown shows as characters.
    assert "**Keep** the label." in [t.value for t in at.text]
    assert all("Keep" not in m.value for m in at.markdown)
    js = (REVIEW_UI / "static" / "review_cards.js").read_text()
    assert "innerHTML" not in js and "insertAdjacentHTML" not in js


def test_a_card_says_what_the_label_model_predicts_and_which_model(
    live_api, annotator_token, engine, review_data
) -> None:
    from sqlalchemy import update

    from db.models import Sample
    from db.session import session_scope

    v, w, x = review_data.variants[review_data.sources[3]][:3]  # intended: bias partisan, message attack
    probs = {"bias": {"neutral": 0.2, "partisan": 0.8}, "message": {"attack": 0.3, "policy": 0.6, "media": 0.1}}

    def scored(sample_id: int, flag: bool, **label_model: Any) -> None:
        with session_scope(engine) as s:
            entry = {"probs": probs, **label_model}
            s.execute(
                update(Sample).where(Sample.id == sample_id).values(label_flag=flag, scores={"label_model": entry})
            )

    scored(v, True, run_id=7, kind="ensemble", val_macro_f1=0.412, chosen=True)
    # Another variant of the same intended labels, scored by a run that records what 9 in 10 of each class's val
    # texts get: `attack` at 0.30 is within that (0.12), so its other label there is no flag, and the card says why;
    # `partisan` at 0.80 lies below what partisan val texts get (0.85): that task flags, though its label agrees.
    below = {"bias": {"partisan": 0.85}, "message": {"attack": 0.12, "policy": 0.3}}
    unheeded = {"message": "policy"}
    scored(w, False, run_id=8, kind="single", val_macro_f1=0.3, flag_below=below, flagged=["bias"], unheeded=unheeded)
    # A third, as the scorer recorded it: a decision rule kept `attack` (no flag, nothing disputed) though the argmax
    # says `policy`, and `bias` has no threshold. The card shows the scorer's verdict, not its own argmax reading.
    scored(x, False, run_id=9, kind="single", flag_below={}, flagged=[])
    at = signed_in(annotator_token, "annotator")
    cards = {c["id"]: c for c in cards_data(at)["cards"]}
    assert cards[x]["label_model"]["tasks"] == [
        ["bias", "partisan", "partisan", "0.80", "", False],
        ["message", "policy", "attack", "0.60", "", False],
    ]
    assert cards[x]["label_model"]["disagrees"] is False
    assert cards[v]["label_model"] == {
        "who": "Label model: ensemble #7 (val macro-F1 0.41), chosen by a person",
        "tasks": [
            ["bias", "partisan", "partisan", "0.80", "", False],
            ["message", "policy", "attack", "0.60", "", True],
        ],
        "disagrees": True,
    }
    assert cards[w]["label_model"] == {
        "who": "Label model: run #8 (val macro-F1 0.30)",
        "tasks": [
            [
                "bias",
                "partisan",
                "partisan",
                "0.80",
                "p(partisan) 0.800 < 0.850, what 9 in 10 of its val texts get",
                True,
            ],
            [
                "message",
                "policy",
                "attack",
                "0.60",
                "no flag: p(attack) 0.300 ≥ 0.120, what 9 in 10 of its val texts get",
                False,
            ],
        ],
        "disagrees": True,
    }


REVIEW_UI = __import__("pathlib").Path(__file__).resolve().parent.parent / "review_ui"


def flow(live_api: str, token: str, dataset: str = "rev", **params: Any):  # type: ignore[no-untyped-def]
    """The review page's card logic (review_ui/review_flow.py) against the live API, without a browser."""
    from review_ui.client import ApiClient
    from review_ui.review_flow import load_view

    client = ApiClient(token, base_url=live_api)
    query = {"status": "pending", "sort": "family", **params}
    return client, load_view(client, dataset, "sig", query, 1, 50)


def test_card_actions_decide_undo_and_report_what_was_stored(live_api, annotator_token, review_data) -> None:
    from review_ui.review_flow import apply_action, payload

    client, view = flow(live_api, annotator_token)
    v1, v2, v3 = review_data.variants[review_data.sources[0]]

    def act(op: str, sample_id: int | None = None, **extra: Any) -> None:
        action = {"op": op, **extra}
        if sample_id is not None:
            action.update(id=sample_id, version=view.items[sample_id]["version"])
        apply_action(view, client, action)

    act("approve", v1)
    assert view.items[v1]["review_status"] == "approved" and "approved" in view.notice["text"]
    act("reject", v2)  # no reason chosen
    card = next(c for c in payload(view, "")["cards"] if c["id"] == v2)
    assert card["status"] == "rejected" and card["last_review"]["reason"] == "unspecified"
    act("reject", v3, reason="meaning_changed")
    card = next(c for c in payload(view, "")["cards"] if c["id"] == v3)
    assert card["last_review"]["reason_label"] == "meaning changed" and card["undoable"]
    # U undoes the last decision first, then the one before.
    act("undo")
    assert view.items[v3]["review_status"] == "pending" and view.focus_request["id"] == v3
    act("undo")
    assert view.items[v2]["review_status"] == "pending"
    assert status_of(live_api, annotator_token, v2)["reviews"][-1]["decision"] == "undo"
    act("edit", v2, text="We must guard Social Security for our seniors.")
    assert view.items[v2]["text"] == "We must guard Social Security for our seniors."
    # the annotator's own text trains once another member approves it, and the notice says so
    assert "edited (waiting for another member's approval)" in view.notice["text"], view.notice
    act("undo", v1)  # an explicit card, out of order
    assert view.items[v1]["review_status"] == "pending" and view.undo_stack == [[v2]]
    decided = status_of(live_api, annotator_token, v2)["sample"]
    assert decided["review_status"] == "pending" and decided["generated_text"] != decided["text"]


def test_u_after_a_reload_undoes_the_latest_decision_even_off_the_page(
    live_api, annotator_token, engine, review_data
) -> None:
    """After a reload (or a new batch) the pending view no longer shows the cards one decided: U said "Nothing of
    yours to undo on this page". It now undoes one's latest standing decision in the dataset."""
    from review_ui.review_flow import apply_action

    client, view = flow(live_api, annotator_token)
    v1, v2, _ = review_data.variants[review_data.sources[0]]
    apply_action(view, client, {"op": "approve", "id": v1, "version": view.items[v1]["version"]})
    apply_action(view, client, {"op": "reject", "id": v2, "version": view.items[v2]["version"]})
    apply_action(view, client, {"op": "undo", "id": v2})  # withdrawn already: not the one to undo next
    client, view = flow(live_api, annotator_token)  # a reload: the pending view, without v1's card
    assert v1 not in view.order
    apply_action(view, client, {"op": "undo"})
    assert "Undone: your vote on" in view.notice["text"] and f"#{v1}" in view.notice["text"]
    assert status_of(live_api, annotator_token, v1)["sample"]["review_status"] == "pending"
    apply_action(view, client, {"op": "undo"})
    assert view.notice["kind"] == "warning" and "Nothing of yours to undo in this dataset" in view.notice["text"]
    # a vote someone else decided over since cannot be undone: U goes past it, not at it for ever
    v3 = review_data.variants[review_data.sources[1]][0]
    apply_action(
        view,
        client,
        {"op": "approve", "id": v1, "version": status_of(live_api, annotator_token, v1)["sample"]["version"]},
    )
    apply_action(
        view,
        client,
        {"op": "reject", "id": v3, "version": status_of(live_api, annotator_token, v3)["sample"]["version"]},
    )
    with api(live_api, issue_token(engine, "carol")) as c:
        version = c.get(f"/samples/{v3}").json()["sample"]["version"]
        assert c.post(f"/samples/{v3}/decision", json={"decision": "approve", "version": version}).status_code == 200
    with api(live_api, annotator_token) as c:
        assert c.get("/datasets/rev/my-latest-decision").json() == {"sample_id": v1}


def test_u_undoes_a_decision_made_in_another_tab_at_the_first_press(live_api, annotator_token, review_data) -> None:
    """U with nothing on this tab's stack undoes one's latest decision; when its card was on the page at the
    version from before that decision (made in another tab), the first U was refused as stale."""
    from review_ui.review_flow import apply_action

    client, view = flow(live_api, annotator_token)  # this tab
    other_client, other = flow(live_api, annotator_token)  # another tab of the same annotator
    v = review_data.variants[review_data.sources[2]][0]
    apply_action(other, other_client, {"op": "approve", "id": v, "version": other.items[v]["version"]})
    assert view.items[v]["review_status"] == "pending"  # this tab still shows the card as it was
    apply_action(view, client, {"op": "undo"})
    assert "Undone: your vote on" in view.notice["text"] and f"#{v}" in view.notice["text"], view.notice
    assert status_of(live_api, annotator_token, v)["sample"]["review_status"] == "pending"


def test_a_stale_card_says_someone_else_decided_first(live_api, annotator_token, engine, review_data) -> None:
    from review_ui.review_flow import apply_action

    client, view = flow(live_api, annotator_token)
    v = review_data.variants[review_data.sources[1]][0]
    with api(live_api, issue_token(engine, "carol")) as c:
        assert (
            c.post(
                f"/samples/{v}/decision", json={"decision": "reject", "version": 1, "reason": "ungrammatical"}
            ).status_code
            == 200
        )
    apply_action(view, client, {"op": "approve", "id": v, "version": 1})
    assert view.notice["kind"] == "warning"
    assert "changed since you saw it" in view.notice["text"] and "by carol" in view.notice["text"]
    # the work is not shared out here: the notice says what would keep two annotators off each other's cards
    assert "Note: others review this queue at the same time" in view.notice["text"], view.notice
    assert view.items[v]["review_status"] == "rejected"  # the card shows the state as it is now
    assert view.items[v]["last_review"]["user"] == "carol"
    state = status_of(live_api, annotator_token, v)
    assert state["sample"]["review_status"] == "rejected" and len(state["reviews"]) == 1  # nothing overwritten


def test_a_refused_edit_gives_its_text_back_and_a_refusal_outlives_the_next_success(
    live_api, annotator_token, review_data
) -> None:
    """An edit the API refused (a duplicate, a leak, a conflict) closed the editor and dropped what was typed;
    and of several keys pressed at once only the last notice showed, so a refusal followed by a success
    vanished. The refused text comes back for the editor; a refusal stays ahead of what follows it."""
    from review_ui.review_flow import apply_action, payload

    client, view = flow(live_api, annotator_token)
    v1, v2, v3 = review_data.variants[review_data.sources[0]]
    view.batch = 1  # one outbox batch: what handle_outbox sets around the actions it applies
    typed = view.items[v2]["text"] + "  "  # another variant's text: refused as a duplicate
    apply_action(view, client, {"op": "edit", "id": v1, "version": view.items[v1]["version"], "text": typed})
    assert view.notice["kind"] == "error" and "duplicates sample" in view.notice["text"]
    refused = payload(view, "")["refused_edit"]
    assert refused["id"] == v1 and refused["text"] == typed
    apply_action(view, client, {"op": "approve", "id": v3, "version": view.items[v3]["version"]})
    assert view.notice["kind"] == "error" and "duplicates sample" in view.notice["text"]
    assert f"Variant #{v3} approved" in view.notice["text"]
    view.batch = 2  # the next batch starts afresh
    apply_action(view, client, {"op": "undo"})
    assert view.notice["kind"] == "success" and "duplicates" not in view.notice["text"]
    # refused because the card changed since (someone else edited it): no draft to save over their text
    with api(live_api, annotator_token) as c:
        c.post(
            f"/samples/{v2}/decision",
            json={"decision": "edit", "version": view.items[v2]["version"], "text": "Theirs."},
        )
    stale = view.items[v2]["version"]
    apply_action(view, client, {"op": "edit", "id": v2, "version": stale, "text": "Mine, over theirs."})
    assert view.notice["kind"] == "warning" and payload(view, "")["refused_edit"]["id"] == v1  # not reopened

    # refused for its length, or not saved because the server was busy or out of reach: the draft comes back
    # (it was dropped, though the message said to retry; an attacker's find)
    from review_ui.client import ApiError

    too_long = "A careful rewrite. " * 1100  # 20,900 characters: 413
    apply_action(view, client, {"op": "edit", "id": v3, "version": view.items[v3]["version"], "text": too_long})
    assert "exceeds" in view.notice["text"] and payload(view, "")["refused_edit"]["text"] == too_long
    for status in (503, 0):

        def failing(*_args: Any, status: int = status, **_kwargs: Any) -> Any:
            raise ApiError(status, "nothing was saved; retry")

        client.decide = failing  # type: ignore[method-assign]
        draft = f"My rewrite ({status})."
        apply_action(view, client, {"op": "edit", "id": v3, "version": view.items[v3]["version"], "text": draft})
        # with the version it was typed over: the editor reopens with it only while the card is at that version
        # (the page stamped the card's refreshed version on it, and it went over a colleague's edit unseen)
        typed_over = view.items[v3]["version"]
        assert payload(view, "")["refused_edit"] == {"seq": ANY, "id": v3, "text": draft, "version": typed_over}


def test_family_and_selection_from_the_cards_and_bulk_by_filter(live_api, annotator_token, engine, review_data) -> None:
    from review_ui.review_flow import apply_action
    from tests.review_fixtures import issue_token

    client, view = flow(live_api, annotator_token)
    family = review_data.sources[3]
    apply_action(view, client, {"op": "family", "parent_id": family, "expected": 3})
    assert all(view.items[v]["review_status"] == "approved" for v in review_data.variants[family])
    assert view.families[family]["pending_variants"] == 0 and "3 variants" in view.notice["text"]
    a, b, _ = review_data.variants[review_data.sources[2]]
    apply_action(view, client, {"op": "selected", "decision": "reject", "ids": [a, b]})
    assert {view.items[a]["review_status"], view.items[b]["review_status"]} == {"rejected"}
    apply_action(view, client, {"op": "undo"})  # the selection comes back as one step
    assert {view.items[a]["review_status"], view.items[b]["review_status"]} == {"pending"}
    # the reasons picked on the cards go with "Reject selected" (all were stored "unspecified")
    picked = {str(a): "ungrammatical", str(b): "meaning_changed"}
    apply_action(view, client, {"op": "selected", "decision": "reject", "ids": [a, b], "reasons": picked})
    assert [view.items[i]["last_review"]["reason"] for i in (a, b)] == ["ungrammatical", "meaning_changed"]
    apply_action(view, client, {"op": "undo"})  # still one step
    assert {view.items[a]["review_status"], view.items[b]["review_status"]} == {"pending"}
    # A family count that no longer holds: nothing happens, and the page says why.
    other = review_data.sources[4]
    apply_action(view, client, {"op": "family", "parent_id": other, "expected": 5})
    assert "nothing was changed" in view.notice["text"]
    assert all(view.items[v]["review_status"] == "pending" for v in review_data.variants[other])
    # Everything matching a filter: count, confirm, apply (the Streamlit part of the page). One of them another
    # member rewrote: an approval passes over it, a rejection does not (counted with the approval, "Reject all"
    # was refused with 409 for ever)
    with api(live_api, issue_token(engine, "carol")) as c:
        personal = c.get("/datasets/rev/review-queue", params={"task": "message", "label": "personal"}).json()
        first = personal["items"][0]
        edit = {"decision": "edit", "version": first["version"], "text": "Carol's own words, not generated."}
        assert c.post(f"/samples/{first['id']}/decision", json=edit).status_code == 200
    at = signed_in(annotator_token, "annotator")
    at.selectbox(key="f_task").set_value("message").run()
    at.selectbox(key="f_label").set_value("personal").run()
    at.button(key="bulk_count_btn").click().run()
    assert any("4 pending variants match" in m.value for m in at.markdown)
    assert any("Approving takes 3 of them and passes over 1" in m.value for m in at.markdown)
    assert at.button(key="bulk_all_no").disabled
    at.selectbox(key="bulk_reason").set_value("near_duplicate")
    at.checkbox(key="bulk_confirm").check().run()
    at.button(key="bulk_all_no").click().run()
    no_errors(at)
    assert "Bulk reject: 4 variants (4 rejected)" in at.success[0].value
    assert "Nothing to review with these filters" in at.info[0].value  # the cards were fetched again
    with api(live_api, annotator_token) as c:
        assert c.get("/datasets/rev/review-queue").json()["total"] == 19 - 3 - 4
        hostile = c.get(f"/samples/{review_data.hostile}").json()
    assert hostile["reviews"][0]["reason"] == "near_duplicate"


def test_filters_batches_and_pages(live_api, annotator_token, engine) -> None:
    from db.session import session_scope
    from tests.review_fixtures import add_variant, make_dataset

    with session_scope(engine) as s:
        sources = make_dataset(s, "many")
        for i in range(70):
            add_variant(s, sources[i % 2], f"text number {i}", method="wordnet" if i % 7 else "mlm")
    at = signed_in(annotator_token, "annotator")
    assert "70 variants match" in at.caption[0].value
    assert len(cards_data(at)["cards"]) == 50
    with api(live_api, annotator_token) as c:  # someone decides 30 of them elsewhere
        ids = [i["id"] for i in c.get("/datasets/many/review-queue", params={"page_size": 30}).json()["items"]]
        c.post("/datasets/many/bulk-decisions", json={"decision": "approve", "sample_ids": ids, "confirm": True})
    at.button(key="next_batch").click().run()  # the pending queue moves up: the next batch is what is left
    assert "40 variants match" in at.caption[0].value and len(cards_data(at)["cards"]) == 40
    at.selectbox(key="f_status").set_value("approved").run()  # a decided view pages as usual
    assert "30 variants match · page 1" in at.caption[0].value
    at.multiselect(key="f_method").select("mlm").run()
    at.selectbox(key="f_status").set_value("pending").run()
    assert at.session_state["page"] == 1 and "5 variants match" in at.caption[0].value  # 10 mlm, 5 approved
    at.text_input(key="f_q").input("number 42").run()
    assert "1 variant matches ·" in at.caption[0].value
    assert [c["text"] for c in cards_data(at)["cards"]] == ["text number 42"]
    # another page and back: the filters are as they were (Streamlit forgets a widget a page does not show)
    at.switch_page("app_pages/datasets.py").run()
    at.switch_page("app_pages/review.py").run()
    no_errors(at)
    assert at.text_input(key="f_q").value == "number 42" and at.multiselect(key="f_method").value == ["mlm"]
    assert [c["text"] for c in cards_data(at)["cards"]] == ["text number 42"]


def test_an_empty_review_page_points_to_augment(live_api, annotator_token, admin_token, engine) -> None:
    """Who can generate variants is told where; an annotator, who cannot, is told who does."""
    from db.session import session_scope
    from tests.review_fixtures import make_dataset

    with session_scope(engine) as s:
        make_dataset(s, "fresh")
    at = signed_in(admin_token, "admin")
    no_errors(at)
    assert "Generate some on the Augment page" in at.info[0].value
    at = signed_in(annotator_token, "annotator")
    no_errors(at)
    assert "a lead of the project generates them" in at.info[0].value
    assert not at.get("bidi_component") or not [
        c for c in at.get("bidi_component") if c.proto.component_name == "augloop_review_cards"
    ]


def test_review_page_shows_live_progress_and_shares_work(
    live_api, annotator_token, admin_token, engine, review_data
) -> None:
    from db.models import AugmentationPlan, Dataset
    from db.session import session_scope

    with session_scope(engine) as s:
        ds = s.query(Dataset).filter_by(name="rev").one()
        s.add(
            AugmentationPlan(
                dataset_id=ds.id,
                plan={"classes": [{"task": "message", "label": "attack", "target": 10, "deficit": 4, "planned": 4}]},
                job_ids=[1],
            )
        )
    with api(live_api, admin_token) as c:
        c.post(
            "/datasets/rev/bulk-decisions",
            json={"decision": "approve", "parent_id": review_data.sources[3], "confirm": True},
        )
        c.patch("/datasets/rev", json={"distribute_work": True})
    at = signed_in(annotator_token, "annotator")
    no_errors(at)
    body = htmls(at)
    assert "3 / 4 approved" in body and "attack" in body and "1 to go" in body
    assert (
        "<td style='padding:3px 6px;text-align:left'>alice-admin</td>"
        "<td style='padding:3px 6px;text-align:right'>3</td>" in body
    )
    # Work is shared out: the caption says what is leased to this annotator, and the cards are that share.
    assert "Your share: 16 variants leased to you" in at.caption[0].value
    assert len(cards_data(at)["cards"]) == 16
    with api(live_api, admin_token) as c:
        assert c.get("/datasets/rev/annotators").json()["annotators"][0]["leased"] in (0, 16)
        assert c.post("/datasets/rev/assignments", json={"size": 50}).json()["items"] == []  # all leased


def test_sessions_keep_the_token_in_server_memory_only() -> None:
    from review_ui import sessions

    sid, ticket = sessions.open_session("aug_secret-token", {"name": "erin", "role": "annotator"})
    cookie = sessions.redeem_ticket(ticket)
    assert cookie and "aug_secret-token" not in cookie and sid in cookie  # the id, signed; not the token
    assert sessions.redeem_ticket(ticket) is None  # one use only
    found = sessions.resume(cookie)
    assert found is not None and found[1].token == "aug_secret-token"
    sessions.remember(sid, filters={"f_status": "rejected"})
    assert sessions.resume(cookie)[1].remembered["filters"] == {"f_status": "rejected"}
    assert sessions.resume(cookie[:-2] + "xx") is None  # a forged signature
    assert sessions.resume(cookie, hours=-1) is None  # too old
    sessions.close(sid)
    assert sessions.resume(cookie) is None  # signed out: the cookie names nothing any more


def test_datasets_page_chart_moves_with_approvals(live_api, annotator_token, admin_token, review_data) -> None:
    at = signed_in(annotator_token, "annotator")
    at.switch_page("app_pages/datasets.py").run()
    no_errors(at)
    assert len(at.get("vega_lite_chart")) == 2  # one bar chart per task
    assert not [h for h in at.header if h.value == "Manage"]  # annotators do not manage datasets

    def attack_after(app: AppTest) -> int:
        balances = [f.value for f in app.dataframe if "train + approved variants" in f.value.columns]
        frame = balances[1]  # task message
        return int(frame.loc[frame["class"] == "attack", "train + approved variants"].iloc[0])

    assert attack_after(at) == 1
    with api(live_api, annotator_token) as c:
        c.post(
            "/datasets/rev/bulk-decisions",
            json={"decision": "approve", "parent_id": review_data.sources[3], "confirm": True},
        )
    at.run()
    assert attack_after(at) == 4
    admin = signed_in(admin_token, "admin")
    admin.switch_page("app_pages/datasets.py").run()
    assert [h for h in admin.header if h.value == "Manage"]
    admin.text_area(key="ds_guidelines").input("Reject anything that changes the **stance**.")
    admin.number_input(key="ds_k").set_value(2)
    admin.toggle(key="ds_distribute").set_value(True)
    admin.number_input(key="ds_lease").set_value(30)
    admin.button[[b.label for b in admin.button].index("Save review settings")].click().run()
    no_errors(admin)
    saved = " ".join(str(m.value) for m in admin.success)
    assert "re-evaluated the reviewed variants" in saved and "approved→pending" in saved, saved
    with api(live_api, admin_token) as c:
        ds = c.get("/datasets/rev").json()
    assert ds["reviews_required"] == 2 and "stance" in ds["guidelines"]
    assert ds["distribute_work"] is True and ds["lease_minutes"] == 30
    # The Datasets page shows the same live progress as the Review page: toward the plan, per annotator.
    assert any(h.value == "Review progress toward the plan" for h in admin.subheader)
    people = next(f.value for f in admin.dataframe if "annotator" in f.value.columns)
    assert people.loc[people["annotator"] == "bob-annotator", "decisions today"].iloc[0] == 3
    assert all("+0.0" not in (m.proto.delta or "") for m in admin.metric)  # no arrow for "no change"


def test_the_imbalance_change_is_the_difference_of_the_ratios_shown(
    live_api, annotator_token, review_data, monkeypatch
) -> None:
    """22 / 9 = 2.44 read "2.4×" and 22 / 13 = 1.69 "1.7×", and the arrow between them said "-0.8×" (the
    unrounded ratios' difference): the change is the shown ratios' own, -0.7×."""
    from review_ui.client import ApiClient

    real = ApiClient.stats

    def stats(self: ApiClient, name: str) -> dict[str, Any]:
        got = real(self, name)
        for info in got["tasks"].values():
            info["imbalance_ratio"], info["imbalance_ratio_with_approved"] = 22 / 9, 22 / 13
        return got

    monkeypatch.setattr(ApiClient, "stats", stats)
    at = signed_in(annotator_token, "annotator")
    at.switch_page("app_pages/datasets.py").run()
    no_errors(at)
    shown = [(m.label, m.value, m.proto.delta) for m in at.metric]
    assert ("Imbalance (largest / smallest)", "2.4×", "") in shown, shown
    assert ("With approved variants", "1.7×", "-0.7×") in shown, shown


def test_jobs_page_shows_progress_counters_errors_and_cancels(live_api, lead_token, engine, example_dataset) -> None:
    from datetime import timedelta

    from db import queue
    from db.datasets import get_dataset
    from db.models import Job, utcnow
    from db.session import session_scope

    with session_scope(engine) as s:  # jobs of a dataset in the lead's project (others' are not shown)
        dataset_id = get_dataset(s, example_dataset).id
        running = queue.enqueue(s, "augment", {"method": "wordnet", "dataset": example_dataset}, dataset_id=dataset_id)
        running.status, running.progress_done, running.progress_total = "running", 30, 120
        running.progress_info = {"kept": 25, "dropped": {"similarity": 3, "duplicate": 2}}
        failed = queue.enqueue(s, "export", {}, dataset_id=dataset_id)
        failed.status, failed.last_error = "failed", "boom <b>not html</b>"
        failed.outages = 2  # attempts given back to database outages: said beside the attempts
        # a worker killed with no other worker up: "running" for as long as none looks for work
        silent = queue.enqueue(s, "augment", {"dataset": example_dataset}, dataset_id=dataset_id)
        silent.status, silent.worker_id = "running", "w-killed"
        silent.lease_until = utcnow() - timedelta(seconds=90)
        running.lease_until = utcnow() + timedelta(seconds=60)
        ids = (running.id, failed.id, silent.id)
    with api(live_api, lead_token) as c:
        assert c.get(f"/jobs/{ids[2]}").json()["worker_silent"] is True
        assert c.get(f"/jobs/{ids[0]}").json()["worker_silent"] is False
        assert [j["worker_silent"] for j in c.get("/jobs").json()["items"]] == [True, False, False]
    with session_scope(engine) as s:
        # an impact report's jobs name their run(s) and report: a dozen train jobs read alike
        arm = queue.enqueue(
            s, "train", {"run_id": 7, "impact_report_id": 3, "dataset": example_dataset}, dataset_id=dataset_id
        )
        trials = {"run_ids": [7, 8], "train_payload": {"impact_report_id": 3}}
        choose = queue.enqueue(s, "lr_select", trials, dataset_id=dataset_id)
        named = (arm.id, choose.id)
    at = signed_in(lead_token, "annotator")
    at.switch_page("app_pages/jobs.py").run()
    no_errors(at)
    [warning] = [w.value for w in at.warning if "stopped answering" in w.value]
    assert "re-queued, or ends on its last attempt, when a worker next looks for work" in warning
    assert [p.proto.value for p in at.get("progress")] == [0, 25]  # the silent one "starting"; 30 of 120
    assert "kept 25 · dropped 5 (duplicate 2, similarity 3)" in htmls(at)  # a sentence, not a Python dict
    assert "{" not in htmls(at)
    assert "attempt 0/3 · created" in htmls(at) and "· 2 database outages (not counted)" in htmls(at)
    assert f"#{ids[0]} · augment · {example_dataset} · running" in htmls(at)  # the card names its dataset
    assert f"#{named[0]} · train · {example_dataset} · run #7 · impact report #3 · queued" in htmls(at)
    assert f"#{named[1]} · lr_select · runs #7, #8 · impact report #3 · queued" in htmls(at)
    assert at.code[0].value == "boom <b>not html</b>"
    table = at.dataframe[0].value
    assert dict(zip(table["counter"], table["value"], strict=True))["dropped.similarity"] == "3"
    at.button(key=f"cancel_{ids[0]}").click().run()
    with session_scope(engine) as s:
        assert s.get(Job, ids[0]).cancel_requested
    assert f"cancel_{ids[1]}" not in {b.key for b in at.button}  # a failed job has nothing to cancel


def test_a_finished_job_that_kept_little_says_why_on_its_card(live_api, lead_token, engine, example_dataset) -> None:
    """An augment job that kept 0 of 21 read "kept 0 · dropped 21" on the Jobs page; its result's `advice` (why
    most were dropped, what to do) is shown on the card as plain text."""
    from db import queue
    from db.datasets import get_dataset
    from db.session import session_scope

    advice = "kept 0 of 21: 12 the augmenter found nothing it may change in those texts <b>x</b> _a_ *b*"
    with session_scope(engine) as s:
        dataset_id = get_dataset(s, example_dataset).id
        job = queue.enqueue(s, "augment", {"method": "wordnet", "dataset": example_dataset}, dataset_id=dataset_id)
        job.status = "succeeded"
        job.result = {"requested": 21, "kept": 0, "advice": advice}
    at = signed_in(lead_token, "annotator")
    at.switch_page("app_pages/jobs.py").run()
    no_errors(at)
    assert (
        "⚠ kept 0 of 21: 12 the augmenter found nothing it may change in those texts &lt;b&gt;x&lt;/b&gt; _a_ *b*"
        in (htmls(at))
    )


def test_the_jobs_page_says_no_job_has_the_chosen_status_not_that_there_are_none(
    live_api, lead_token, engine, example_dataset
) -> None:
    from db import queue
    from db.datasets import get_dataset
    from db.session import session_scope

    with session_scope(engine) as s:
        dataset_id = get_dataset(s, example_dataset).id
        done = queue.enqueue(s, "augment", {"method": "wordnet", "dataset": example_dataset}, dataset_id=dataset_id)
        done.status = "succeeded"
    at = signed_in(lead_token, "annotator")
    at.switch_page("app_pages/jobs.py").run()
    no_errors(at)
    assert not at.info
    at.multiselect(key="jobs_status").set_value(["failed"]).run()
    assert [i.value for i in at.info] == ["No failed jobs."]  # it said "No jobs yet." beside a succeeded job
    at.multiselect(key="jobs_status").set_value(["queued", "running", "cancelled"]).run()
    assert [i.value for i in at.info] == ["No queued, running or cancelled jobs."]


def test_start_forms_say_which_seed_or_config_does_not_parse(monkeypatch) -> None:
    """A seed typed as "4x" showed Python's "invalid literal for int() with base 10"."""
    from review_ui import state

    said: list[str] = []
    monkeypatch.setattr(state.st, "error", lambda text: said.append(str(text)))
    assert state.run_inputs("42, 4x", "{}") is None and "not '4x'" in said[-1] and "invalid literal" not in said[-1]
    assert state.run_inputs("42", "[1]") is None and "JSON object" in said[-1]
    assert state.run_inputs("42", "{nope") is None and "not JSON" in said[-1]
    assert state.run_inputs("42, 43", '{"epochs": 5}') == ([42, 43], {"epochs": 5})


def test_an_annotator_is_not_offered_a_leads_actions(live_api, annotator_token, engine, review_data) -> None:
    """Planning, training, impact reports and cancelling are a lead's: an annotator saw the forms and met 403s."""
    from db import queue
    from db.datasets import get_dataset
    from db.session import session_scope

    with session_scope(engine) as s:
        job = queue.enqueue(s, "augment", {"method": "wordnet"}, dataset_id=get_dataset(s, "rev").id)
    at = signed_in(annotator_token, "annotator")
    # The role is per project: the sidebar names only the global one, admin (a lead read "(annotator)" there).
    assert "Signed in as bob\\-annotator" in [c.value for c in at.sidebar.caption]  # escaped: shown as text
    at.switch_page("app_pages/jobs.py").run()
    no_errors(at)
    assert f"cancel_{job.id}" not in {b.key for b in at.button}
    for page, lead_only in (
        ("app_pages/augment.py", "Preview the plan"),
        ("app_pages/training.py", "Start training"),
        ("app_pages/impact.py", "Start impact report"),
    ):
        at.switch_page(page).run()
        no_errors(at)
        assert lead_only not in [b.label for b in at.button], page
        assert any("A lead of the dataset's project" in str(c.value) for c in at.caption), page


def test_training_page_lists_runs_and_starts_one(live_api, lead_token, engine, review_data, monkeypatch) -> None:
    from db.models import Dataset, Job, TrainingRun
    from db.session import session_scope

    with session_scope(engine) as s:
        ds = s.query(Dataset).filter_by(name="rev").one()
        add_val_texts(s, ds)  # a training request needs labelled val texts
        s.add(
            TrainingRun(
                dataset_id=ds.id,
                name="baseline",
                status="succeeded",
                config={"encoder": "enc", "max_length": 64, "epochs": 2},
                curve=[
                    {
                        "epoch": 1,
                        "train_loss": 0.9,
                        "val_macro_f1": 0.4,
                        "plain_val_macro_f1": 0.35,  # a short run validates its weights' moving average
                        "lr": 2e-5,
                        "samples_per_s": 20.0,
                        "val_task_macro_f1": {"bias": 0.5, "message": 0.3},
                    },
                    {
                        "epoch": 2,
                        "train_loss": 0.6,
                        "val_macro_f1": 0.5,
                        "plain_val_macro_f1": 0.45,
                        "lr": 1e-5,
                        "samples_per_s": 22.0,
                        "val_task_macro_f1": {"bias": 0.6, "message": 0.4},
                    },
                ],
                metrics={
                    "val": {"overall_macro_f1": 0.5},
                    "test": {
                        "overall_macro_f1": 0.55,
                        "tasks": {  # the test split holds no "attack" text: its macro-F1 leaves the class out
                            "message": {
                                "macro_f1": 0.55,
                                "per_class": {
                                    "attack": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0},
                                    "policy": {"precision": 0.6, "recall": 0.5, "f1": 0.55, "support": 4},
                                },
                                "classes_without_support": ["attack"],
                                "confusion": {"labels": ["attack", "policy"], "matrix": [[0, 0], [0, 2]]},
                            }
                        },
                    },
                    "best_epoch": 2,
                },
            )
        )
    at = signed_in(lead_token, "annotator")
    at.switch_page("app_pages/training.py").run()
    no_errors(at)
    assert at.dataframe[0].value["name"].tolist() == ["baseline"]
    [lacking] = [w.value.replace("\\", "") for w in at.warning if "No test text is labelled" in w.value]
    assert "'attack' (1 of 2 classes of message)" in lacking and "cannot tell" in lacking
    charts = at.get("vega_lite_chart")
    assert len(charts) == 4  # loss, val macro-F1, learning rate: one axis each; then message's per-class F1
    assert "overall, plain weights" in str(charts[1].proto), "the plain weights' val macro-F1 is drawn"
    assert next(m for m in at.metric if m.label == "val macro-F1").value == "0.500"
    # Before starting: the defaults in the fields, and an estimate of the time.
    assert at.number_input(key="tr_epochs").value == 20 and at.number_input(key="tr_max_length").value == 320
    assert any("Estimated time: about" in m.value for m in at.markdown)
    # an epoch shows one text of each family: the count says so (a run then reports every sample it holds)
    per_epoch = "training texts per epoch (one of each original and its variants)"
    assert any(per_epoch in c.value.replace("\\", "") for c in at.caption), [c.value for c in at.caption]
    at.text_input(key="tr_encoder").input("enc")
    at.number_input(key="tr_epochs").set_value(3)
    at.number_input(key="tr_max_length").set_value(64).run()
    assert any("Basis\\: run" in c.value and "same encoder" in c.value for c in at.caption)  # on baseline
    # a hub name this machine has not cached, offline: said before Start (the run failed seconds after it)
    assert any("The encoder cannot load here" in w.value for w in at.warning), [w.value for w in at.warning]
    at.text_input(key="tr_seeds").input("1, 2").run()
    at.checkbox(key="tr_classical").uncheck().run()  # transformer runs only (the TF-IDF member is on by default)
    start_button(at).click().run()
    no_errors(at)
    assert "Queued training run(s)" in at.success[0].value
    # The next start is another button: a double click's second click, sent before the page re-ran, names the
    # first one, which is gone (tests/test_ui_double_submit.py clicks twice in a browser)
    assert start_button(at).key != "_submit_training_0"
    # ... and a second click that lands on the form drawn anew (a busy machine), its fields kept, within
    # DOUBLE_CLICK_SECONDS of the runs queued, queues nothing more and keeps their message
    from review_ui import state

    monkeypatch.setattr(state, "DOUBLE_CLICK_SECONDS", 3600.0)
    start_button(at).click().run()
    no_errors(at)
    assert "Queued training run(s)" in at.success[0].value
    monkeypatch.setattr(state, "DOUBLE_CLICK_SECONDS", 0.0)
    with session_scope(engine) as s:
        runs = s.query(TrainingRun).order_by(TrainingRun.id).all()
        assert [(r.config["seed"], r.config["epochs"], r.config["max_length"]) for r in runs[1:]] == [
            (1, 3, 64),
            (2, 3, 64),
        ]
        job = s.get(Job, runs[1].job_id)
        job.status, job.progress_done, job.progress_total = "running", 1, 3
        job.progress_info = {"epoch": 2, "batch": 30, "batches": 60, "loss": 0.71234, "val_macro_f1": 0.41}
        runs[1].status = "running"
    at.selectbox(key="run_pick").set_value(runs[1].id).run()
    no_errors(at)
    [bar] = at.get("progress")
    assert bar.proto.value == 50  # (1 epoch + 30/60 of the second) of 3
    assert "epoch 2 of 3 · batch 30 of 60 · loss 0.712" in bar.proto.text
    # The new runs are listed without a manual refresh (a fragment reruns every few seconds while one is active).
    assert len(at.dataframe[0].value) == 3
    # A checkpoint the disk refused: said (training goes on), as text
    said = "the checkpoint at step 10 could not be written: No space left on device (ENOSPC); *goes on*"
    with session_scope(engine) as s:
        job = s.get(Job, s.get(TrainingRun, int(at.selectbox(key="run_pick").value)).job_id)
        job.progress_info = {**(job.progress_info or {}), "checkpoint_error": said}
    at.run()
    assert [w.value for w in at.warning if "Checkpoint not saved" in w.value] == [
        plain(f"Checkpoint not saved: {said}.")
    ]


def test_training_page_lets_a_lead_leave_out_a_task_that_cannot_train(
    live_api, lead_token, engine, review_data
) -> None:
    """A dataset where one task has no labelled val text: the form asked for its defaults with every task, got
    422, and showed its fields at their minimums (1 epoch, 8 tokens) with no way to leave the task out but a
    JSON box the fields overrode; a run could start so. The API's reason shows, the fields wait, and a task
    picker leaves the task out: the form then opens at the defaults and the run trains the other task."""
    from db.models import Dataset, TrainingRun
    from db.session import session_scope
    from tests.review_fixtures import add_original

    with session_scope(engine) as s:
        ds = s.query(Dataset).filter_by(name="rev").one()
        add_original(s, ds, "Vote for the farm bill tomorrow.", {"bias": "partisan"}, "val", "val0")
        add_original(s, ds, "Thanks to all who came out tonight.", {"bias": "neutral"}, "val", "val1")
    at = signed_in(lead_token, "annotator")
    at.switch_page("app_pages/training.py").run()
    assert any("for task(s) ['message']" in e.value.replace("\\", "") for e in at.error), [e.value for e in at.error]
    assert not [n for n in at.number_input if n.key == "tr_epochs"], "the fields wait for the defaults"
    assert not [b for b in at.button if b.label == "Start training"]
    at.multiselect(key="tr_tasks").set_value([]).run()  # none: said, not put back to every task
    assert any("Pick at least one task" in e.value for e in at.error) or not at.number_input
    at.multiselect(key="tr_tasks").set_value(["bias"]).run()
    no_errors(at)
    assert at.number_input(key="tr_epochs").value == 20 and at.number_input(key="tr_max_length").value == 320
    # Away and back: Streamlit forgot the fields' values; they come back at the defaults, not their minimums
    at.switch_page("app_pages/review.py").run()
    at.switch_page("app_pages/training.py").run()
    assert at.multiselect(key="tr_tasks").value == ["bias"]
    assert at.number_input(key="tr_epochs").value == 20 and at.number_input(key="tr_max_length").value == 320
    at.text_input(key="tr_encoder").input("enc")
    at.checkbox(key="tr_classical").uncheck().run()
    start_button(at).click().run()
    no_errors(at)
    with session_scope(engine) as s:
        [run] = s.query(TrainingRun).all()
        assert run.config["tasks"] == ["bias"] and run.config["epochs"] == 20


def runs_box(at: AppTest) -> Any:
    return next(m for m in at.multiselect if m.label == "Runs")


def test_a_lead_combines_runs_into_an_ensemble_on_the_training_page(
    live_api, lead_token, engine, review_data, monkeypatch
) -> None:
    """Ensembles were the API's and the CLI's only: a lead who trained seeds and the TF-IDF member from the page
    could not combine them there. Proposed: the runs finished since the latest ensemble; a member trained on
    another training set is said, on the page and in the run's warnings."""
    from db.models import Dataset, TrainingRun
    from db.session import session_scope
    from tests.test_trainer_api import _finished_runs

    with session_scope(engine) as s:
        add_val_texts(s, s.query(Dataset).filter_by(name="rev").one())
    ids = _finished_runs(engine, "rev", 3, first_id=500)
    with session_scope(engine) as s:
        s.get_one(TrainingRun, ids[2]).snapshot_digest = "another training set"
    at = signed_in(lead_token, "annotator")
    at.switch_page("app_pages/training.py").run()
    no_errors(at)
    assert runs_box(at).value == ids
    combine = next(b for b in at.button if b.label == "Combine")
    runs_box(at).set_value(ids[:1])
    combine.click().run()
    assert any("Pick at least two runs" in e.value for e in at.error)
    next(t for t in at.text_input if t.label == "Name (optional)").input(
        "x" * 151
    )  # a paste past the limit was dropped in silence
    runs_box(at).set_value(ids)
    next(b for b in at.button if b.label == "Combine").click().run()
    assert any("The name is 151 characters; the most is 150" in e.value for e in at.error)
    next(t for t in at.text_input if t.label == "Name (optional)").input("")
    next(b for b in at.button if b.label == "Combine").click().run()
    assert not at.exception, [e.value for e in at.exception]
    with session_scope(engine) as s:
        [ensemble] = s.query(TrainingRun).filter_by(kind="ensemble").all()
        assert ensemble.member_ids == ids
        groups = set(ensemble.config["groups"].values())
    assert len(groups) == 2, "a run of another training set is no seed of the others: its own weight"
    said = [w.value for w in at.warning if "different training sets" in w.value]
    assert said and f"#{ensemble.id}" in said[0] + "".join(w.value for w in at.warning), [w.value for w in at.warning]
    assert at.session_state["run_pick"] == ensemble.id
    # the comparison starts from the two newest again, the ensemble one of them (it kept the old pair), by name
    compared = {sb.label: sb for sb in at.selectbox if sb.label in ("Run A", "Run B")}
    assert compared["Run B"].value == ensemble.id and compared["Run A"].value == ids[-1], compared
    assert compared["Run B"].format_func(ensemble.id).startswith(f"#{ensemble.id} ")
    # a fresh form: the runs combined are no longer proposed (a second Combine made the same ensemble again)
    assert runs_box(at).value == []
    # its Combine clicked at once (a double click's second click that landed on the fresh form): no "pick at
    # least two runs" beside the ensemble made
    from review_ui import state

    monkeypatch.setattr(state, "DOUBLE_CLICK_SECONDS", 3600.0)
    next(b for b in at.button if b.label == "Combine").click().run()
    assert not at.error, [e.value for e in at.error]
    assert any(f"#{ensemble.id}" in w.value for w in at.warning) or any(
        f"#{ensemble.id}" in m.value for m in at.success
    )
    monkeypatch.setattr(state, "DOUBLE_CLICK_SECONDS", 0.0)
    # a run deleted meanwhile: the form starts again, saying so beside it
    later = _finished_runs(engine, "rev", 2, first_id=900)
    at.switch_page("app_pages/training.py").run()
    assert runs_box(at).value == later
    with session_scope(engine) as s:
        s.delete(s.get_one(TrainingRun, later[1]))
    next(b for b in at.button if b.label == "Combine").click().run()
    assert any("deleted meanwhile" in e.value for e in at.error), [e.value for e in at.error]
    assert runs_box(at).value == []


def test_the_ensemble_form_proposes_at_most_what_an_ensemble_takes(live_api, lead_token, engine, review_data) -> None:
    """40 finished runs and no ensemble: the form proposed all 40 beside its limit of 32, and Streamlit's
    exception took the rest of the Training page with it."""
    from db.models import Dataset
    from db.session import session_scope
    from tests.test_trainer_api import _finished_runs

    with session_scope(engine) as s:
        add_val_texts(s, s.query(Dataset).filter_by(name="rev").one())
    ids = _finished_runs(engine, "rev", 40, first_id=700)
    at = signed_in(lead_token, "annotator")
    at.switch_page("app_pages/training.py").run()
    no_errors(at)
    assert runs_box(at).value == ids[-32:]
    assert any(h.value == "Compare two runs" for h in at.subheader)


def test_the_training_page_says_when_a_runs_worker_stopped_answering(live_api, lead_token, engine, review_data) -> None:
    """kill -9 of the worker mid-run: the Jobs page warned, the Training page showed "running" with its progress
    frozen and kept refreshing."""
    from datetime import timedelta

    from db import queue
    from db import training_runs as db_runs
    from db.datasets import get_dataset
    from db.models import utcnow
    from db.session import session_scope

    with session_scope(engine) as s:
        ds = get_dataset(s, "rev")
        add_val_texts(s, ds)  # the start form needs labelled val texts (or it says so, an error box)
        run = db_runs.create_run(s, ds, {"encoder": "x", "seed": 1, "epochs": 5}, name="r", status="running")
        job = queue.enqueue(s, "train", {"run_id": run.id}, dataset_id=ds.id)
        job.status, job.worker_id, job.lease_until = "running", "w-killed", utcnow() - timedelta(seconds=90)
        job.progress_done, job.progress_total = 2, 5
        run.job_id = job.id
        run.curve = [
            {"epoch": 1, "train_loss": 0.9, "val_macro_f1": 0.35},
            {"epoch": 2, "train_loss": 0.7, "val_macro_f1": 0.42},
        ]
        run_id = run.id
    with api(live_api, lead_token) as c:
        assert c.get(f"/training-runs/{run_id}").json()["progress"]["worker_silent"] is True
    at = signed_in(lead_token, "annotator")
    at.switch_page("app_pages/training.py").run()
    no_errors(at)
    assert any("Its worker stopped answering" in w.value for w in at.warning), [w.value for w in at.warning]
    # while it trains, the last epoch's val macro-F1 (the box said n/a beside a bar that gave it)
    assert next(m for m in at.metric if m.label.startswith("val macro-F1")).label == "val macro-F1 (epoch 2)"
    assert next(m for m in at.metric if m.label.startswith("val macro-F1")).value == "0.420"


def test_training_page_compares_with_the_originals_only_run(
    live_api, lead_token, engine, review_data, monkeypatch
) -> None:
    from db.models import Dataset, TrainingRun
    from db.session import session_scope
    from review_ui import state

    with session_scope(engine) as s:
        ds = s.query(Dataset).filter_by(name="rev").one()
        add_val_texts(s, ds)  # a training request needs labelled val texts
        for name, variants, f1 in (("plain", "none", 0.25), ("augmented", "approved", 0.75)):
            test = {
                "overall_macro_f1": 0.5,
                "tasks": {"bias": _task_metrics({"neutral": 0.5, "partisan": f1}, [[3, 1], [2, 2]])},
            }
            s.add(
                TrainingRun(
                    dataset_id=ds.id,
                    name=name,
                    status="succeeded",
                    config={"variants": variants},
                    metrics={"val": test, "test": test},
                )
            )
    at = signed_in(lead_token, "annotator")
    at.switch_page("app_pages/training.py").run()
    no_errors(at)
    assert [h.value for h in at.subheader if "originals-only" in h.value] == ["Against the originals-only run #1"]
    table = next(f.value for f in at.dataframe if "#2 − #1" in f.value.columns)
    assert abs(table[table["class"] == "partisan"].iloc[0]["#2 − #1"] - 0.5) < 1e-9
    button = at.button(key="_submit_label_model_2_0")  # once per click: each request queues a rescoring job
    assert button.label == "Use run #2 to score the pending variants"
    button.click().run()  # this run kept no model: the API says so, nothing queued
    assert "saved model of run 2 is missing" in at.error[0].value
    assert at.button(key="_submit_label_model_2_0")  # refused: the same button may be pressed again
    # the runs part is a fragment whose timer re-runs it every few seconds: its message stays up a while (it was
    # gone a second after the click), then goes with the run that ends after that
    at.run()
    assert any("saved model of run 2" in e.value for e in at.error), [e.value for e in at.error]
    monkeypatch.setattr(state, "FRAGMENT_MESSAGE_SECONDS", 0.0)
    at.run()
    at.run()
    assert not any("saved model of run 2" in e.value for e in at.error), [e.value for e in at.error]


def test_training_page_starts_a_budgeted_run_and_shows_its_plan_and_lr_trials(
    live_api, lead_token, engine, review_data
) -> None:
    from sqlalchemy import select

    from db.models import Dataset, TrainingRun
    from db.session import session_scope

    trials = [
        {"scale": 1.0, "lr": 2.5e-5, "steps": 120, "val_macro_f1": 0.41, "seconds": 30.0},
        {"scale": 2.0, "lr": 5e-5, "steps": 120, "val_macro_f1": 0.44, "seconds": 31.0},
    ]
    with session_scope(engine) as s:
        ds = s.query(Dataset).filter_by(name="rev").one()
        add_val_texts(s, ds)  # a training request needs labelled val texts
        # and the TF-IDF member (on by default) a class with two train texts for its cross-validation
        add_original(
            s,
            ds,
            "Cut the tax on Social Security benefits.",
            {"bias": "partisan", "message": "policy"},
            "train",
            "src6",
        )
        s.add(
            TrainingRun(
                dataset_id=ds.id,
                name="budgeted",
                status="succeeded",
                lr_selection={
                    "status": "done",
                    "reason": "best val macro-F1 0.4400 at 2 × the planned LR",
                    "scale": 2.0,
                    "trials": trials,
                    "recipe": {"grad_accum": 1, "head_layers": 1},
                    "recipe_reason": "one recipe for the request's 3 run(s), planned for 1.9 epochs at the pace "
                    "measured here: grad_accum 1, head_layers 1",
                },
                metrics={
                    "val": {"overall_macro_f1": 0.44},
                    "plan": {
                        "steps_done": 900,
                        "batch_size": 12,
                        "grad_accum": 1,
                        "lr": 5e-5,
                        "reasons": ["R-Drop off: the run affords 1.9 epochs with it (< 10)"],
                    },
                    "soup": {"summary": "weights: greedy soup of epochs 3, 5, val macro-F1 0.4500 (best epoch 3 …)"},
                },
            )
        )
    at = signed_in(lead_token, "annotator")
    at.switch_page("app_pages/training.py").run()
    no_errors(at)
    labels = [e.label.replace("\\", "") for e in at.expander]  # user-visible text is escaped, never markdown
    assert any(label.startswith("Learning-rate selection: done") for label in labels)
    assert any(label.startswith("Plan: 900 steps of batch 12 × 1") for label in labels)
    trial_frame = next(f.value for f in at.dataframe if "scale" in f.value.columns)
    assert trial_frame["scale"].tolist() == [1.0, 2.0]
    assert "R-Drop off: the run affords 1.9 epochs with it (< 10)" in [t.value for t in at.text]
    assert any(t.value.startswith("one recipe for the request's 3 run(s)") for t in at.text)
    assert "weights: greedy soup of epochs 3, 5, val macro-F1 0.4500 (best epoch 3 …)" in [t.value for t in at.text]

    at.number_input(key="train_budget").set_value(12.0).run()  # a change reruns the page (the estimate)
    at.number_input(key="tr_max_length").set_value(96).run()
    at.switch_page("app_pages/jobs.py").run()  # a look at another page, and back: what was typed stays
    at.switch_page("app_pages/training.py").run()
    no_errors(at)
    assert at.number_input(key="train_budget").value == 12.0, "the budget typed came back 0 (hours estimated)"
    assert at.number_input(key="tr_max_length").value == 96
    at.button[[b.label for b in at.button].index("Start training")].click().run()
    no_errors(at)
    with session_scope(engine) as s:
        runs = list(s.scalars(select(TrainingRun).where(TrainingRun.name != "budgeted")))
        assert sorted(r.kind for r in runs) == ["single", "tfidf"]  # the TF-IDF member is on by default
        assert next(r for r in runs if r.kind == "single").config["budget_minutes"] == 12.0
        assert next(r for r in runs if r.kind == "single").config["max_length"] == 96


def _task_metrics(f1s: dict[str, float], matrix: list[list[int]]) -> dict:
    return {
        "macro_f1": sum(f1s.values()) / len(f1s),
        "accuracy": 0.5,
        "n": sum(map(sum, matrix)),
        "per_class": {k: {"f1": v, "precision": v, "recall": v, "support": 2} for k, v in f1s.items()},
        "confusion": {"labels": list(f1s), "matrix": matrix},
    }


def test_training_page_shows_per_class_f1_confusion_and_compares_runs(
    live_api, annotator_token, engine, review_data
) -> None:
    from db.models import Dataset, TrainingRun
    from db.session import session_scope

    with session_scope(engine) as s:
        ds = s.query(Dataset).filter_by(name="rev").one()
        for name, f1 in (("originals", 0.25), ("augmented", 0.75)):
            test = {
                "overall_macro_f1": 0.5,
                "tasks": {"bias": _task_metrics({"neutral": 0.5, "partisan": f1}, [[3, 1], [2, 2]])},
            }
            s.add(TrainingRun(dataset_id=ds.id, name=name, status="succeeded", metrics={"val": test, "test": test}))
    at = signed_in(annotator_token, "annotator")
    at.switch_page("app_pages/training.py").run()
    no_errors(at)
    frames = [f.value for f in at.dataframe]
    per_class = next(f for f in frames if "class" in f.columns and "f1" in f.columns)
    assert dict(zip(per_class["class"], per_class["f1"], strict=True)) == {"neutral": 0.5, "partisan": 0.75}
    confusion = next(f for f in frames if list(f.columns) == ["neutral", "partisan"])
    assert confusion.loc["partisan", "neutral"] == 2
    comparison = frames[-1]
    delta = comparison.columns[-1]
    row = comparison[(comparison["class"] == "partisan")].iloc[0]
    assert delta.endswith("#1") and abs(row[delta] - 0.5) < 1e-9  # run 2 (augmented) − run 1 (originals)


def test_training_page_without_training_routes(settings, engine, annotator_token, monkeypatch) -> None:
    """An API server from before the trainer: the page says so instead of failing."""
    import api.main
    from api.routes import training
    from tests.review_fixtures import seed_review_data, serve

    seed_review_data(engine)
    monkeypatch.setattr(api.main, "ROUTERS", [r for r in api.main.ROUTERS if r is not training.router])
    with serve(api.main.create_app(settings, engine), monkeypatch):
        at = signed_in(annotator_token, "annotator")
        at.switch_page("app_pages/training.py").run()
        no_errors(at)
        assert "no training endpoints" in at.info[0].value


def test_the_pages_follow_a_role_changed_since_sign_in(live_api, engine, annotator_token, monkeypatch) -> None:
    """The role read at sign-in held for the whole session: an annotator made admin never got the Admin pages
    until they signed in again, and an admin made annotator kept them (every action refused). The user is read
    again at most every USER_FRESH_SECONDS."""
    from db.session import session_scope
    from review_ui import state
    from services.tokens import change_role

    def admin_pages_offered(at: AppTest) -> bool:
        try:
            at.switch_page("app_pages/tokens.py")
        except ValueError:  # not among the pages the navigation offers
            return False
        at.switch_page("app_pages/review.py")
        return True

    at = signed_in(annotator_token, "annotator")
    assert not admin_pages_offered(at)
    with session_scope(engine) as s:
        change_role(s, "bob-annotator", "admin")
    at.run()  # within USER_FRESH_SECONDS of the last read: one request saved, the role as read
    assert not admin_pages_offered(at)
    monkeypatch.setattr(state, "USER_FRESH_SECONDS", 0.0)
    at.run()
    assert admin_pages_offered(at) and "Signed in as bob\\-annotator \\(admin\\)" in [
        c.value for c in at.sidebar.caption
    ]
    with session_scope(engine) as s:
        change_role(s, "bob-annotator", "annotator")
    at.run()
    no_errors(at)
    assert not admin_pages_offered(at)


def test_tokens_page_is_for_admins(live_api, annotator_token, admin_token) -> None:
    annotator = signed_in(annotator_token, "annotator")
    with pytest.raises(ValueError):
        annotator.switch_page("app_pages/tokens.py")
    at = signed_in(admin_token, "admin")
    at.switch_page("app_pages/tokens.py").run()
    no_errors(at)
    at.text_input[0].input("dora")
    at.button[0].click().run()
    token = at.code[0].value
    assert token.startswith("aug_") and "not shown again" in at.success[0].value
    with httpx.Client(base_url=live_api) as c:
        assert c.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).json()["name"] == "dora"
    dora = next(r for r in at.dataframe[0].value.to_dict("records") if r["name"] == "dora")
    at.selectbox(key="revoke_pick").set_value(dora["id"])
    at.button(key="revoke_btn").click().run()
    no_errors(at)
    with httpx.Client(base_url=live_api) as c:
        assert c.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401
        assert c.get("/api/v1/me", headers={"Authorization": f"Bearer {admin_token}"}).status_code == 200


def test_admin_imports_exports_and_deletes_a_dataset(live_api, admin_token, review_data) -> None:
    at = signed_in(admin_token, "admin")
    at.switch_page("app_pages/datasets.py").run()
    csv = b"id,text,stance,split\n1,We will win,pro,train\n2,We will lose,con,val\n3,Maybe we win,pro,train\n"
    at.file_uploader[0].upload("tiny.csv", csv, "text/csv")
    field = {t.label: t for t in at.text_input}
    field["Dataset name (new or existing)"].set_value("tiny")
    field["Label columns (tasks), comma-separated"].set_value("stance")
    at.button[[b.label for b in at.button].index("Import")].click().run()
    no_errors(at)
    assert "Imported 3 samples" in at.success[0].value
    at.run()  # the dataset list was drawn before the import ran
    at.selectbox(key="dataset").set_value("tiny").run()
    # No train text of `con`: its imbalance is infinite, not "n/a", and the page says which class lacks texts.
    shown = {m.label: m.value for m in at.metric}
    # the same ∞ with approved variants (it read "n/a" beside the ∞ for the same task)
    assert shown["Imbalance (largest / smallest)"] == shown["With approved variants"] == "∞", shown
    assert any("No train text of con: a model cannot learn this class" in c.value for c in at.caption)
    at.button[[b.label for b in at.button].index("Prepare export")].click().run()
    no_errors(at)
    [download] = at.get("download_button")
    assert "tiny\\.csv" in download.proto.label  # as markdown shows it: plain(), the name is text
    at.text_input(key="del_confirm").input("tiny").run()
    at.button[[b.label for b in at.button].index("Delete dataset")].click().run()
    with api(live_api, admin_token) as c:
        assert [d["name"] for d in c.get("/datasets").json()] == ["rev"]


@pytest.fixture
def small_request_cap(monkeypatch) -> int:
    """AUGLOOP_MAX_REQUEST_BYTES of the API and the UI, for a test that names this before its API."""
    monkeypatch.setenv("AUGLOOP_MAX_REQUEST_BYTES", "1500000")
    return 1_500_000


def test_the_import_tab_states_the_apis_cap_and_says_beside_the_form_how_a_larger_file_imports(
    small_request_cap, live_api, admin_token, review_data, monkeypatch
) -> None:
    """The uploader said "200MB per file" (Streamlit's default) where the API takes 50 MiB, and a 63 MB file got
    the API's bare "request body exceeds 52428800 bytes (body)" at the top of the page, after its whole upload."""
    from core.settings import get_settings

    at = signed_in(admin_token, "admin")
    at.switch_page("app_pages/datasets.py").run()
    assert at.file_uploader[0].proto.max_upload_size_mb == 2  # 1,500,000 bytes in Streamlit's MB (MiB), rounded up
    # said as the refusal says it: "Up to 2 MB" beside "sends up to 1.4 MB" read as a contradiction
    assert any(c.value.startswith("Up to 1.4 MB here") for c in at.caption), [c.value for c in at.caption]
    big = b"id,text,stance,split\n" + b"".join(b"%d,We will win %d,pro,train\n" % (i, i) for i in range(60_000))
    assert len(big) > small_request_cap
    at.file_uploader[0].upload("big posts.csv", big, "text/csv")
    field = {t.label: t for t in at.text_input}
    field["Dataset name (new or existing)"].set_value("big")
    field["Label columns (tasks), comma-separated"].set_value("stance")
    at.button[[b.label for b in at.button].index("Import")].click().run()
    import_tab = next(t for t in at.tabs if t.label == "Import")
    said = [e.value.replace("\\", "") for e in import_tab.error]
    assert len(said) == len(at.error) == 1, [e.value for e in at.error]  # beside the form, nowhere else
    assert "big posts.csv is 1.9 MB: the Import tab sends up to 1.4 MB" in said[0], said
    assert "augloop import 'big posts.csv' --dataset big --task=stance" in said[0], said
    with api(live_api, admin_token) as c:
        assert [d["name"] for d in c.get("/datasets").json()] == ["rev"]
    # An API whose cap is below this UI's setting: its 413 is said beside the form too, with the same ways out.
    monkeypatch.setenv("AUGLOOP_MAX_REQUEST_BYTES", str(4 * 2**20))
    get_settings.cache_clear()
    at.run().file_uploader[0].upload("big posts.csv", big, "text/csv")  # the uploader as the new cap draws it
    at.button[[b.label for b in at.button].index("Import")].click().run()
    import_tab = next(t for t in at.tabs if t.label == "Import")
    said = [e.value.replace("\\", "") for e in import_tab.error]
    assert len(said) == len(at.error) == 1, [e.value for e in at.error]
    assert "request body exceeds 1500000 bytes" in said[0] and "--dataset big --task=stance" in said[0], said


@pytest.mark.parametrize("typed", ["data/v2", "what?", "rev/../tiny", "My Data"])
def test_the_import_form_names_the_dataset_name_rule_before_it_uploads(
    live_api, admin_token, review_data, typed
) -> None:
    """A name with "/" or "?" got a bare 404 or 405 (the client put it in the URL as it was), and "rev/../tiny"
    imported into "tiny"; now the slug rule is said, naming the field, and nothing is sent."""
    at = signed_in(admin_token, "admin")
    at.switch_page("app_pages/datasets.py").run()
    at.file_uploader[0].upload("tiny.csv", b"id,text,stance,split\n1,We will win,pro,train\n", "text/csv")
    field = {t.label: t for t in at.text_input}
    field["Dataset name (new or existing)"].set_value(typed)
    field["Label columns (tasks), comma-separated"].set_value("stance")
    at.button[[b.label for b in at.button].index("Import")].click().run()
    said = [e.value.replace("\\", "") for e in at.error]
    assert any("a dataset name must be 1-64 lower-case letters" in e and "(name)" in e for e in said), said
    with api(live_api, admin_token) as c:
        assert [d["name"] for d in c.get("/datasets").json()] == ["rev"]
        assert c.get("/jobs", params={"kind": "import"}).json()["total"] == 0


def test_the_ui_client_sends_a_name_as_one_path_segment() -> None:
    from review_ui.client import segment

    assert segment("rev/../tiny") == "rev%2F..%2Ftiny" and segment("what?#x") == "what%3F%23x"
    assert segment("..") == "%2E%2E" and segment(".") == "%2E" and segment("bob smith") == "bob%20smith"


def test_pages_say_the_api_is_unreachable_not_that_there_is_no_dataset(monkeypatch) -> None:
    """With the API down every page with a dataset chooser also said "No dataset yet", which was false."""
    import socket

    from core import settings as settings_mod

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("AUGLOOP_API_URL", f"http://127.0.0.1:{port}")
    settings_mod.get_settings.cache_clear()
    at = signed_in("aug_any", "annotator")
    assert any("cannot reach the API" in e.value for e in at.error), [e.value for e in at.error]
    assert not any("No dataset yet" in i.value for i in at.info)
    settings_mod.get_settings.cache_clear()


def test_approve_family_after_rewriting_one_of_its_cards(live_api, annotator_token, review_data) -> None:
    """At k = 1 a text one rewrote waits with one's own vote for another member: the family button (its count
    the family's pending variants) then sent a count the server, which counts the variants one has not voted
    on, never matched: "The family changed … nothing was changed", after every reload (an attacker's find)."""
    from review_ui.review_flow import apply_action, awaiting_another_member

    client, view = flow(live_api, annotator_token)
    family = review_data.sources[3]
    rewritten, *rest = review_data.variants[family]
    apply_action(
        view,
        client,
        {"op": "edit", "id": rewritten, "version": view.items[rewritten]["version"], "text": "Mine, rewritten."},
    )
    assert "waiting for another member's approval" in view.notice["text"]
    assert awaiting_another_member(view.items[rewritten], view.reviews_required)
    apply_action(view, client, {"op": "family", "parent_id": family, "expected": len(rest) + 1})
    assert "nothing was changed" not in view.notice["text"], view.notice
    assert all(view.items[v]["review_status"] == "approved" for v in rest)
    assert view.items[rewritten]["review_status"] == "pending"


def test_a_lead_re_evaluates_the_reviewed_variants_under_todays_rules(
    live_api, lead_token, annotator_token, engine, review_data
) -> None:
    """After an upgrade, variants decided under an older rule keep their status until k is sent again: an edit
    its writer alone approved before 2026-12-06 kept training. The Datasets page has the button for it."""
    from sqlalchemy import update

    from db.models import Sample
    from db.session import session_scope

    variant = review_data.variants[review_data.sources[1]][0]
    with api(live_api, annotator_token) as c:
        version = c.get(f"/samples/{variant}").json()["sample"]["version"]
        edit = {"decision": "edit", "version": version, "text": "Approved on its writer's word, the old way."}
        assert c.post(f"/samples/{variant}/decision", json=edit).json()["review_status"] == "pending"
    with session_scope(engine) as s:  # as the rule before 12-06 stored it
        s.execute(update(Sample).where(Sample.id == variant).values(review_status="approved"))
    lead = signed_in(lead_token, "annotator", "lena-lead")
    lead.switch_page("app_pages/datasets.py").run()
    lead.button(key="ds_reevaluate").click().run()
    no_errors(lead)
    said = " ".join(str(m.value) for m in lead.success)
    assert "Re-evaluated the reviewed variants: 1 approved→pending" in said, said
    with api(live_api, lead_token) as c:
        assert c.get(f"/samples/{variant}").json()["sample"]["review_status"] == "pending"
        assert c.get("/datasets/rev").json()["reviews_required"] == 1  # nothing else changed


def _import_second_dataset(live_api: str, admin_token: str) -> None:
    rows = "\n".join(f"another text {i} number {i * 13},{['train', 'val', 'test'][i % 3]},t{i % 2}" for i in range(30))
    with api(live_api, admin_token) as c:
        made = c.post(
            "/datasets/aaa/import",
            files={"file": ("x.csv", ("text,split,topic\n" + rows).encode())},
            data={"task": ["topic"]},
        )
        assert made.status_code == 201, made.text


def test_a_lead_edits_the_protected_terms_on_the_datasets_page(live_api, lead_token, review_data) -> None:
    """Protected terms (words WordNet and the masked LM never replace) were the API's and the CLI's only: a lead
    working in the browser could not add one. A term refused keeps what was typed."""
    at = signed_in(lead_token, "annotator")
    at.switch_page("app_pages/datasets.py").run()
    no_errors(at)
    at.selectbox(key="dataset").set_value("rev").run()
    at.text_input(key="terms_add_rev").input("harvest, health care")
    next(b for b in at.button if b.label == "Save protected terms").click().run()
    no_errors(at)
    with api(live_api, lead_token) as c:
        held = {t["term"] for t in c.get("/datasets/rev/protected-terms").json()["terms"]}
    assert {"harvest", "health care"} <= held, held
    assert any("Protected terms saved" in m.value for m in at.success), [m.value for m in at.success]
    at.text_input(key="terms_add_rev").input("vote2024")  # digits: no term
    next(b for b in at.button if b.label == "Save protected terms").click().run()
    assert any("is not a term" in e.value for e in at.error), [e.value for e in at.error]
    assert at.text_input(key="terms_add_rev").value == "vote2024"
    at.text_input(key="terms_add_rev").input("")
    at.multiselect(key="terms_remove_rev").select("harvest")
    next(b for b in at.button if b.label == "Save protected terms").click().run()
    with api(live_api, lead_token) as c:
        held = {t["term"] for t in c.get("/datasets/rev/protected-terms").json()["terms"]}
    assert "harvest" not in held and "health care" in held, held


def test_the_review_settings_form_shows_and_saves_the_chosen_datasets_own_values(
    live_api, admin_token, review_data
) -> None:
    """The settings widgets, keyed alone, kept the first dataset's values on every dataset (Streamlit ignores a
    new value= once a key holds state): a lead who picked another dataset and changed only the lease saved the
    first one's k and guidelines there, and an approved variant left training (an attacker's find). Save sends
    only what the user changed, so a colleague's change to another field since the page read it stays."""
    _import_second_dataset(live_api, admin_token)  # first in the list, with no pending work
    with api(live_api, admin_token) as c:
        c.patch("/datasets/aaa", json={"guidelines": "AAA guidelines", "reviews_required": 3})
        c.patch("/datasets/rev", json={"guidelines": "REV guidelines"})
        variant = review_data.variants[review_data.sources[0]][0]
        assert c.post(f"/samples/{variant}/decision", json={"decision": "approve", "version": 1}).status_code == 200
    admin = signed_in(admin_token, "admin")
    admin.switch_page("app_pages/datasets.py").run()
    # signed in, the page opens where the work is (rev); chosen, aaa shows its own values
    assert admin.selectbox(key="dataset").value == "rev"
    admin.selectbox(key="dataset").set_value("aaa").run()
    assert admin.text_area(key="ds_guidelines").value == "AAA guidelines"
    admin.selectbox(key="dataset").set_value("rev").run()
    shown = (admin.text_area(key="ds_guidelines").value, admin.number_input(key="ds_k").value)
    assert shown == ("REV guidelines", 1), shown
    with api(live_api, admin_token) as c:  # a colleague rewrites the guidelines while the page is open
        c.patch("/datasets/rev", json={"guidelines": "A colleague's guidelines"})
    admin.number_input(key="ds_lease").set_value(30)
    admin.button[[b.label for b in admin.button].index("Save review settings")].click().run()
    no_errors(admin)
    with api(live_api, admin_token) as c:
        rev = c.get("/datasets/rev").json()
        assert c.get(f"/samples/{variant}").json()["sample"]["review_status"] == "approved"
    assert (rev["lease_minutes"], rev["reviews_required"], rev["guidelines"]) == (30, 1, "A colleague's guidelines")
    assert admin.text_area(key="ds_guidelines").value == "A colleague's guidelines"  # the form reads it again
    # another page and back: Streamlit dropped the widgets' state, the form came back empty and Save sent k = 1,
    # sharing off and no guidelines (a reviewer's find)
    with api(live_api, admin_token) as c:
        c.patch("/datasets/rev", json={"reviews_required": 2})
    admin.run()
    admin.switch_page("app_pages/jobs.py").run()
    admin.switch_page("app_pages/datasets.py").run()
    admin.selectbox(key="dataset").set_value("rev").run()
    assert admin.text_area(key="ds_guidelines").value == "A colleague's guidelines"
    assert admin.number_input(key="ds_k").value == 2
    admin.number_input(key="ds_lease").set_value(45)
    admin.button[[b.label for b in admin.button].index("Save review settings")].click().run()
    with api(live_api, admin_token) as c:
        rev = c.get("/datasets/rev").json()
    assert (rev["lease_minutes"], rev["reviews_required"], rev["guidelines"]) == (45, 2, "A colleague's guidelines")


def test_re_evaluating_sends_the_k_stored_now_not_the_one_the_page_read(
    live_api, lead_token, admin_token, review_data
) -> None:
    """The button sent the k read when the page was drawn: a colleague's k = 3 since then went back to 1."""
    lead = signed_in(lead_token, "annotator", "lena-lead")
    lead.switch_page("app_pages/datasets.py").run()
    with api(live_api, admin_token) as c:
        assert c.patch("/datasets/rev", json={"reviews_required": 3}).status_code == 200
    lead.button(key="ds_reevaluate").click().run()
    no_errors(lead)
    with api(live_api, lead_token) as c:
        assert c.get("/datasets/rev").json()["reviews_required"] == 3


def test_typed_settings_and_seeds_that_do_not_parse_strictly_are_said_not_raised(
    live_api, lead_token, engine, review_data
) -> None:
    """NaN or Infinity in the Training page's 'More settings' raised a traceback from the HTTP client on every
    rerun; '[' × 100,000 a RecursionError there and on the Impact page; seeds such as '²' or '①' (digits to
    str.isdigit, not to int) or of 5,000 digits a ValueError (an attacker's finds). Each is a message now."""
    from db.models import Dataset
    from db.session import session_scope
    from review_ui.state import json_object, seed_list

    for text in (
        '{"weight_decay": NaN}',
        '{"lr": -Infinity}',
        '{"lr": 1e400}',
        '{"epochs": -1e999}',
        "[" * 100_000,
        "[1, 2]",
        "{",
    ):
        value, problem = json_object(text)
        assert value is None and problem, text[:20]
    assert json_object('{"epochs": 3}') == ({"epochs": 3}, None)
    for seeds in ("42, ²", "①", "9" * 5000, "4 2x"):
        value, problem = seed_list(seeds)
        assert value is None and "whole numbers" in (problem or ""), seeds[:20]
    assert seed_list(" 42, 43,44 ") == ([42, 43, 44], None)

    with session_scope(engine) as s:
        add_val_texts(s, s.query(Dataset).filter_by(name="rev").one())
    at = signed_in(lead_token, "annotator", "lena-lead")
    at.switch_page("app_pages/training.py").run()
    at.text_area(key="tr_extra").input('{"weight_decay": NaN}').run()
    assert not at.exception, [e.message for e in at.exception]
    shown = " ".join(str(m.value) for m in [*at.error, *at.warning, *at.info, *at.caption])
    assert "More settings must be a JSON object" in shown and "NaN" in shown, shown


def test_keys_pressed_before_the_first_answer_are_applied_in_order_and_said_in_full(
    live_api, annotator_token, review_data
) -> None:
    """A then F before A was answered: F carried the family's count the page showed (3), which A had made 2, and
    the family was refused as 'changed' by one's own approval. A selection rejected with two reasons said only
    the last reason's count ('Rejected 1 selected variants: 1 variants'). Attackers' finds."""
    from review_ui.review_flow import apply_action, payload

    client, view = flow(live_api, annotator_token)
    v1, v2, v3 = review_data.variants[review_data.sources[0]]
    shown = payload(view, "")["families"][str(review_data.sources[0])]["pending"]
    view.batch = 1  # one outbox: A, then F
    apply_action(view, client, {"op": "approve", "id": v1, "version": view.items[v1]["version"], "seq": 1})
    apply_action(view, client, {"op": "family", "parent_id": review_data.sources[0], "expected": shown, "seq": 2})
    assert [view.items[i]["review_status"] for i in (v1, v2, v3)] == ["approved"] * 3, view.notice
    assert view.notice["kind"] == "success", view.notice

    w1, w2, w3 = review_data.variants[review_data.sources[1]]
    view.batch = 2
    reasons = {str(w1): "meaning_changed", str(w2): "meaning_changed", str(w3): "ungrammatical"}
    apply_action(view, client, {"op": "selected", "decision": "reject", "ids": [w1, w2, w3], "reasons": reasons})
    assert all(view.items[i]["review_status"] == "rejected" for i in (w1, w2, w3))
    assert view.notice["text"].startswith("Rejected 3 selected variants (3 rejected)"), view.notice
    apply_action(view, client, {"op": "undo"})  # one step undoes the whole selection
    assert all(view.items[i]["review_status"] == "pending" for i in (w1, w2, w3)), view.notice
    # one variant is one ("Rejected 1 selected variants: 1 variants (1 rejected)")
    apply_action(view, client, {"op": "selected", "decision": "reject", "ids": [w1], "reasons": {str(w1): "other"}})
    assert view.notice["text"].startswith("Rejected 1 selected variant (1 rejected). U undoes it."), view.notice


def test_a_bulk_count_is_offered_only_on_the_dataset_it_counted(live_api, annotator_token, engine, review_data) -> None:
    """Counted on one dataset, the same filter's count ("19 pending variants match", with Approve/Reject all
    19) was offered on another that had none (the API refused the decision, but the page misled)."""
    from db.session import session_scope
    from tests.review_fixtures import make_dataset

    with session_scope(engine) as s:
        make_dataset(s, "zzz")
    at = signed_in(annotator_token, "annotator")
    at.selectbox(key="dataset").set_value("rev").run()
    at.button(key="bulk_count_btn").click().run()
    assert any("pending variants match" in m.value for m in at.markdown)
    at.selectbox(key="dataset").set_value("zzz").run()
    no_errors(at)
    assert not any("pending variants match" in m.value for m in at.markdown)


def test_a_token_revoked_mid_session_ends_the_session_on_the_sign_in_page(
    live_api, engine, admin_token, review_data
) -> None:
    """The tab went on saying 'Signed in as zed' while every page showed '401: invalid, expired or revoked
    token' (the Jobs page twice), until a reload (an attacker's find). The first refused call ends the session:
    the sign-in page says why, and nothing of the session is left."""
    from tests.review_fixtures import issue_token

    token = issue_token(engine, "zed")
    at = signed_in(token, "annotator", "zed")
    no_errors(at)
    with api(live_api, admin_token) as c:
        token_id = next(t["id"] for t in c.get("/tokens").json() if t["name"] == "zed")
        assert c.post(f"/tokens/{token_id}/revoke").status_code == 200
    at.switch_page("app_pages/jobs.py").run()
    assert not at.exception, [e.message for e in at.exception]
    assert "token_input" in [t.key for t in at.text_input], [e.value for e in at.error]
    assert any("Your token was refused" in w.value for w in at.warning), [w.value for w in at.warning]
    assert not at.error and "token" not in at.session_state


def test_the_jobs_page_offers_cancel_only_on_the_projects_a_user_leads(
    live_api, engine, admin_token, review_data
) -> None:
    """A lead of one project who is an annotator of another was offered Cancel on the other project's jobs,
    which met the API's 403 (an attacker's find)."""
    from tests.review_fixtures import issue_token

    rows = "\n".join(f"p2 text {i} number {i * 17},{['train', 'val', 'test'][i % 3]},{'ab'[i % 2]}" for i in range(30))
    lena = issue_token(engine, "lena", project_role="lead")  # lead of `default`, which holds rev
    with api(live_api, admin_token) as c:
        assert c.post("/projects", json={"name": "p2"}).status_code == 201
        made = c.post(
            "/datasets/p2data/import",
            files={"file": ("x.csv", ("text,split,topic\n" + rows).encode())},
            data={"task": ["topic"], "project": "p2"},
        )
        assert made.status_code == 201, made.text
        assert c.put("/projects/p2/members", json={"user": "lena", "role": "annotator"}).status_code == 200
    with api(live_api, lena) as mine:
        theirs = mine.post("/datasets/p2data/exports", json={"format": "csv"}).json()["id"]
        own = mine.post("/datasets/rev/exports", json={"format": "csv"}).json()["id"]
    at = signed_in(lena, "annotator", "lena")
    at.switch_page("app_pages/jobs.py").run()
    no_errors(at)
    offered = {b.key for b in at.button if (b.key or "").startswith("cancel_")}
    assert offered == {f"cancel_{own}"}, (offered, theirs)


def test_bulk_decisions_leave_a_colleagues_leased_share_to_them(
    live_api, engine, admin_token, annotator_token, review_data
) -> None:
    """Work shared out: bob's page leased him every pending variant; carol's bulk panel said '19 pending
    variants match this filter' and 'Reject all 19' rejected his whole share under his open page (an attacker's
    find). A bulk decision passes over what others hold leases for, as a claim does, and says how many."""
    from tests.review_fixtures import issue_token

    with api(live_api, admin_token) as c:
        assert c.patch("/datasets/rev", json={"distribute_work": True}).status_code == 200
    bob = signed_in(annotator_token, "annotator", "bob-annotator")
    assert "Your share: 19 variants" in bob.caption[0].value
    carol_token = issue_token(engine, "carol")
    carol = signed_in(carol_token, "annotator", "carol")
    carol.button(key="bulk_count_btn").click().run()
    no_errors(carol)
    said = " ".join(m.value for m in carol.markdown)
    assert "0 pending variants match this filter" in said and "19 more are leased to other annotators" in said, said
    with api(live_api, carol_token) as c:
        body = {"decision": "reject", "reason": "unspecified", "filter": {}, "confirm": True}
        done = c.post("/datasets/rev/bulk-decisions", json=body).json()
        assert done["applied"] == 0 and done["skipped"] == {"leased_to_others": 19}, done
        family = review_data.sources[0]  # by family and by ids alike
        by_family = c.post(
            "/datasets/rev/bulk-decisions", json={"decision": "approve", "parent_id": family, "confirm": True}
        ).json()
        assert by_family["applied"] == 0 and by_family["skipped"] == {"leased_to_others": 3}, by_family
        ids = review_data.variants[family]
        by_ids = c.post(
            "/datasets/rev/bulk-decisions", json={"decision": "approve", "sample_ids": ids, "confirm": True}
        ).json()
        assert by_ids["applied"] == 0 and by_ids["skipped"] == {"leased_to_others": 3}, by_ids
    with api(live_api, annotator_token) as c:
        assert c.get("/datasets/rev/review-queue").json()["total"] == 19  # bob's share, whole
    # a lease whose holder has voted is no work left to them (it lives on, renewed, while their page is open)
    with api(live_api, annotator_token) as c:
        first = c.get(f"/samples/{ids[0]}").json()["sample"]
        assert (
            c.post(f"/samples/{ids[0]}/decision", json={"decision": "approve", "version": first["version"]}).json()[
                "review_status"
            ]
            == "approved"
        )
        second = c.get(f"/samples/{ids[1]}").json()["sample"]
    with api(live_api, admin_token) as c:
        assert c.patch("/datasets/rev", json={"reviews_required": 2}).status_code == 200
    with api(live_api, annotator_token) as c:  # bob votes on the second; at k = 2 it waits for another vote
        voted = c.post(f"/samples/{ids[1]}/decision", json={"decision": "approve", "version": second["version"]})
        assert voted.json()["review_status"] == "pending", voted.text
    with api(live_api, carol_token) as c:
        done = c.post(
            "/datasets/rev/bulk-decisions", json={"decision": "approve", "sample_ids": [ids[1]], "confirm": True}
        ).json()
        assert done["applied"] == 1 and "leased_to_others" not in done["skipped"], done


def test_an_empty_review_page_reads_the_queue_again_when_variants_arrive(
    live_api, annotator_token, lead_token, engine
) -> None:
    """Opened before any variant exists, the page reads the queue again when it runs again (coming back to it,
    "Check again", the live panel seeing the pending count move); a view with cards stays as it is."""
    from db.session import session_scope
    from tests.review_fixtures import add_variant, make_dataset

    with session_scope(engine) as s:
        sources = make_dataset(s, "fresh")
    at = signed_in(annotator_token, "annotator")
    no_errors(at)
    assert "No variants to review yet" in at.info[0].value
    assert [b for b in at.button if b.label == "Check again"]
    with session_scope(engine) as s:  # the augmentation job succeeds meanwhile
        add_variant(s, sources[0], "We must defend Social Security for our seniors.")
    at.switch_page("app_pages/datasets.py").run()
    at.switch_page("app_pages/review.py").run()  # Review in the sidebar again
    no_errors(at)
    assert "1 variant matches" in at.caption[0].value
    assert [c["text"] for c in cards_data(at)["cards"]] == ["We must defend Social Security for our seniors."]
    # a view with cards is not read again under the annotator's hands
    with session_scope(engine) as s:
        add_variant(s, sources[1], "Proud to meet with local growers in Ames today.")
    at.run()
    assert len(cards_data(at)["cards"]) == 1


def test_the_ensemble_form_leaves_an_impact_reports_arms_out_of_its_proposal(
    live_api, lead_token, engine, review_data
) -> None:
    """An impact report's arm runs (trained without variants on purpose) were proposed beside the lead's own
    runs, and combining them warned that variants were approved or texts imported between the runs. The arms
    are left out of the proposal (still offered), the API's run listing says which arm a run is, and chosen by
    hand they are said to differ by design."""
    from db.models import Dataset, ImpactReport, TrainingRun
    from db.session import session_scope
    from tests.test_trainer_api import _finished_runs

    with session_scope(engine) as s:
        add_val_texts(s, s.query(Dataset).filter_by(name="rev").one())
    arms = _finished_runs(engine, "rev", 2, first_id=600)
    with session_scope(engine) as s:
        ds = s.query(Dataset).filter_by(name="rev").one()
        for arm, i, left_out in (("originals", arms[0], ["mlm", "wordnet"]), ("without:mlm", arms[1], ["mlm"])):
            run = s.get_one(TrainingRun, i)
            run.name, run.snapshot_digest = f"impact 1 {arm}", f"set {arm}"
            run.config = {**run.config, "variants": "approved", "exclude_methods": left_out}
        report = {"originals": [arms[0]], "without:mlm": [arms[1]]}
        s.add(ImpactReport(dataset_id=ds.id, status="succeeded", run_ids=report))
    mine = _finished_runs(engine, "rev", 2, first_id=650)
    with api(live_api, lead_token) as c:
        listed = {r["id"]: r["impact_arm"] for r in c.get("/training-runs", params={"dataset": "rev"}).json()}
    assert listed[arms[0]] == {"report_id": ANY, "arm": "originals"} and listed[mine[0]] is None
    at = signed_in(lead_token, "annotator")
    at.switch_page("app_pages/training.py").run()
    no_errors(at)
    assert runs_box(at).value == mine
    assert any(o.startswith(f"#{arms[0]} impact 1 originals") for o in runs_box(at).options)  # still offered
    runs_box(at).set_value([*arms, *mine])
    next(b for b in at.button if b.label == "Combine").click().run()
    no_errors(at)
    said = " ".join(w.value for w in at.warning).replace("\\", "")  # as markdown: plain() escapes
    assert "3 different training sets by design" in said, said
    assert f"#{arms[0]} without the mlm, wordnet variants" in said and "approved or texts imported" not in said


def test_after_a_reload_follow_run_picks_the_running_run_not_the_newest_finished_one(
    live_api, lead_token, engine, review_data
) -> None:
    """After a reload (a new session) "Follow run" picked the newest run, a finished TF-IDF member, over the
    running seed it was following. The budget field reads the product's default: no budget (0)."""
    from db.models import Dataset, TrainingRun
    from db.session import session_scope

    with session_scope(engine) as s:
        ds = s.query(Dataset).filter_by(name="rev").one()
        add_val_texts(s, ds)
        s.add(TrainingRun(dataset_id=ds.id, name="older", kind="single", status="succeeded"))
        s.flush()
        running = TrainingRun(dataset_id=ds.id, name="seed 42", kind="single", status="running")
        s.add(running)
        s.flush()
        s.add(TrainingRun(dataset_id=ds.id, name="seed 42 tfidf", kind="tfidf", status="succeeded"))
        waiting = TrainingRun(
            dataset_id=ds.id, name="seed 43", kind="single", status="queued", lr_selection={"status": "queued"}
        )
        s.add(waiting)
        s.flush()
        running_id, waiting_id = running.id, waiting.id
    at = signed_in(lead_token, "annotator")  # a new session: what a reload gets
    at.switch_page("app_pages/training.py").run()
    no_errors(at)
    assert at.selectbox(key="run_pick").value == running_id
    assert at.number_input(key="train_budget").value == 0.0  # TrainConfig.budget_minutes: None, the epochs
    # a queued run says what it waits for: its LR selection first (it read "waiting for a worker" beside one
    # busy with the request's TF-IDF member)
    at.selectbox(key="run_pick").select(waiting_id).run()
    assert any(i.value.startswith("Queued: its learning-rate selection runs first") for i in at.info), at.info
