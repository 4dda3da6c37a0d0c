"""The review UI against what an attacker review found: a word diff that stalled on repetitive texts, an audit
that told the auditor what the rule thought, icon shortcodes that plain() let through, and a search text too
long for a URL that ended in a traceback."""

from __future__ import annotations

import html
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from review_ui.client import ApiClient, ApiError
from review_ui.render import NO_WORD_DIFF, diff_html, diff_segments, plain, provenance
from review_ui.review_flow import build_card
from tests.review_fixtures import issue_token, live_api, review_data  # noqa: F401

APP = "../review_ui/app.py"


def variant(text: str, **extra: Any) -> dict[str, Any]:
    """A review-queue item as the API describes a back-translated variant of source #1."""
    return {
        "id": 7,
        "version": 1,
        "review_status": "pending",
        "parent_id": 1,
        "text": text,
        "method": "backtranslation",
        "method_params": {"pivot": "de"},
        "model_name": "Helsinki-NLP/opus-mt-en-de",
        "seed": 0,
        "similarity": 0.8,
        "label_consistency": 0.9,
        "label_flag": False,
        "auto_decision": None,
        **extra,
    }


def family(text: str) -> dict[str, Any]:
    return {"id": 1, "text": text, "split": "train", "labels": {"bias": "neutral"}}


# 1. The word diff stays cheap ------------------------------------------------------------------------------


def test_a_repetitive_pair_is_shown_without_a_word_diff_in_well_under_a_second() -> None:
    """difflib on "a b a b …" against "a b c a b c …" took 50 s for 2,000 words (and held the GIL): past its
    budget the card shows the variant as written, and says why there are no marks."""
    source = " ".join(["a", "b"] * 1000)
    edited = " ".join(["a", "b", "c"] * 667)
    started = time.perf_counter()
    card = build_card(variant(edited), family(source), 1)
    assert time.perf_counter() - started < 0.5
    assert card["segments"] == [("eq", edited)]
    assert card["diff_note"] == NO_WORD_DIFF
    started = time.perf_counter()
    shown = diff_html(source, edited)
    assert time.perf_counter() - started < 0.5
    assert "<ins" not in shown and html.escape(NO_WORD_DIFF) in shown


def test_a_cards_votes_name_the_reviews_per_variant_not_a_fraction() -> None:
    """After an annotator's edit and an admin's approval (k = 1) the card read "votes: 2 keep, 0 drop of 1"."""
    edited = build_card(variant("Vote on Tuesday.", votes={"approve": 2, "reject": 0}), family("Vote Tuesday."), 1)
    assert edited["votes_text"] == "votes: 2 keep, 0 drop · 1 review per variant"
    votes = {"approve": 1, "reject": 1, "mine": "approve"}
    split = build_card(variant("Vote on Tuesday.", votes=votes), family("Vote Tuesday."), 3)
    assert split["votes_text"] == "votes: 1 keep, 1 drop (yours: approve) · 3 reviews per variant"


def test_a_normal_pair_and_a_long_text_with_a_local_edit_keep_their_word_diff() -> None:
    card = build_card(
        variant("We have to protect Social Security for our older people."),
        family("We must protect Social Security for our seniors."),
        1,
    )
    assert ("ins", "have to") in card["segments"] and ("del", "must") in card["segments"]
    assert ("ins", "older people.") in card["segments"] and ("del", "seniors.") in card["segments"]
    assert card["diff_note"] is None
    # ~20,000 characters with one word changed: the common start and end are matched without difflib.
    words = [f"word{i % 97}" for i in range(3000)]
    edited = [*words[:1500], "CHANGED", *words[1501:]]
    started = time.perf_counter()
    segments = diff_segments(" ".join(words), " ".join(edited))
    assert time.perf_counter() - started < 0.5
    assert segments is not None
    assert [piece for piece in segments if piece[0] != "eq"] == [("del", words[1500]), ("ins", "CHANGED")]


# 2. The audit is blind --------------------------------------------------------------------------------------


def test_an_audit_sample_reads_like_any_other_pending_variant() -> None:
    """An audit sample is one the rule would approve: saying so on the card primes the auditor."""
    text, source = "Join us at the rally this Saturday!", "Join us at the rally on Saturday!"
    audited = build_card(variant(text, auto_decision="audit"), family(source), 1)
    plain_pending = build_card(variant(text), family(source), 1)
    assert audited == plain_pending
    assert not re.search(r"audit|rule|would approve", repr(audited), re.IGNORECASE)
    # What the rule did on its own is still said: those variants are decided already.
    assert "auto-approved" in provenance(variant(text, auto_decision="approved", review_status="approved"))


# 3. No icon from user text ----------------------------------------------------------------------------------


def streamlit_text(markdown: str) -> str:
    """The text Streamlit's markdown element searches for icons: StreamlitMarkdown.tsx first rewrites
    ":material/" as ":material_" in the source, then replaces /:material_(\\w+):/ (an icon) and /:streamlit:/
    (its logo) in the text nodes, after markdown has removed its backslash escapes."""
    from markdown_it import MarkdownIt

    rendered = MarkdownIt("commonmark").render(markdown.replace(":material/", ":material_"))
    return html.unescape(re.sub(r"<[^>]+>", "", rendered)).strip()


@pytest.mark.parametrize(
    "text",
    [
        "user :material/warning: name",
        "user :material_warning: name",
        ":material/delete:",
        "echoed error: :streamlit: and :material/lock_open:",
    ],
)
def test_plain_keeps_icon_shortcodes_as_text(text: str) -> None:
    seen = streamlit_text(plain(text))
    assert not re.search(r":material_(\w+):|:streamlit:", seen)
    assert seen.replace("\u200b", "") == text  # shown as written
    assert plain(":smile: :red[alarm]") == r"\:smile\: \:red\[alarm\]"  # as before: escaped, no zero-width space


# 4. A search text too long for a URL ------------------------------------------------------------------------


def test_a_search_text_too_long_for_a_url_is_an_api_error_not_a_traceback() -> None:
    """httpx refuses a URL part over 64 KiB with InvalidURL, which is not an HTTPError; it is raised before any
    connection, so no API needs to answer here."""
    api = ApiClient("aug_token", base_url="http://127.0.0.1:9")
    with pytest.raises(ApiError) as raised:
        api.review_queue("rev", q="x" * 70_000)
    assert raised.value.status == 0 and "not sent" in raised.value.detail


def signed_in_annotator(token: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["token"] = token
    at.session_state["user"] = {"id": 0, "name": "someone", "role": "annotator"}
    return at


def test_the_review_page_shows_an_over_long_search_as_an_error(live_api, annotator_token, review_data) -> None:
    at = signed_in_annotator(annotator_token)
    at.session_state["f_q"] = "x" * 70_000  # as a filter restored after a reload could hold it
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert [e.value for e in at.error] == [plain("the request was not sent: URL component 'query' too long")]


def test_the_search_box_takes_no_more_than_the_api_accepts(live_api, annotator_token, review_data) -> None:
    """The API takes 200 characters (db/review_filter.py): the browser cuts a longer text as it is typed, and
    Streamlit cuts one that arrives anyway."""
    at = signed_in_annotator(annotator_token).run()
    box = at.text_input(key="f_q")
    assert box.proto.max_chars == 200
    box.set_value("y" * 70_000).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert "Nothing to review with these filters." in [i.value for i in at.info]


# 5. Task and class names are data, never chart columns -------------------------------------------------------


def curve_with_tasks(*tasks: str) -> list[dict[str, Any]]:
    """A run's curve as the API gives it: overall val macro-F1 (and the plain weights') and each task's."""
    return [
        {
            "epoch": epoch,
            "train_loss": 0.5 / epoch,
            "val_macro_f1": 0.4 + epoch / 10,
            "plain_val_macro_f1": 0.3 + epoch / 10,
            "lr": 1e-5,
            "val_task_macro_f1": {task: i / 10 + epoch / 100 for i, task in enumerate(tasks)},
        }
        for epoch in (1, 2)
    ]


def draw_curves(curve: list) -> None:  # run as a script by AppTest: builtin annotations only
    from review_ui import charts

    charts.curve_charts(curve)


def test_a_task_named_epoch_or_overall_is_a_task_of_its_own_on_the_curve() -> None:
    """A task named "epoch" crashed the run view (id_vars cannot contain duplicate columns), and one named
    "overall" was drawn as the overall curve: the per-task scores are rows with the task as a value."""
    from review_ui.charts import F1, f1_curve

    curve = curve_with_tasks("epoch", "overall", "overall, plain weights", "stance")
    frame = f1_curve(curve)
    assert list(frame.columns) == ["epoch", "series", F1]
    assert sorted(set(frame["series"])) == [
        "overall",
        "overall, plain weights",
        "task: epoch",
        "task: overall",
        "task: overall, plain weights",
        "task: stance",
    ]
    at2 = frame[frame["epoch"] == 2].set_index("series")[F1]
    assert at2["overall"] == pytest.approx(0.6) and at2["task: overall"] == pytest.approx(0.12)
    assert at2["task: epoch"] == pytest.approx(0.02) and at2["overall, plain weights"] == pytest.approx(0.5)
    for tasks in (("epoch", "stance"), ("overall",), ("x",)):
        at = AppTest.from_function(draw_curves, args=(curve_with_tasks(*tasks),), default_timeout=60).run()
        assert not at.exception, (tasks, [e.value for e in at.exception])
        assert len(at.get("vega_lite_chart")) == 3


def draw_deltas(result: dict) -> None:  # run as a script by AppTest: builtin annotations only
    import streamlit as st

    from review_ui import charts

    st.bar_chart(charts.impact_deltas(result), horizontal=True, stack=False)


def test_impact_classes_whose_names_read_alike_keep_a_bar_each() -> None:
    """ "task / class" joined task "a / b" and class "c" into the same key as task "a" and class "b / c": pivot
    failed on the duplicate. Each task and class keeps its own row, named so that the two differ."""
    from review_ui.charts import DELTA, impact_deltas

    def row(task: str, name: str, arm: str, delta: float) -> dict[str, Any]:
        return {"task": task, "class": name, "arm": arm, "delta": delta, "mean": 0.5, "sd": 0.0, "ci": [0, 0]}

    result = {
        "rows": [
            row("a / b", "c", "all approved", 0.01),
            row("a", "b / c", "all approved", 0.02),
            row("a / b", "c", "without wordnet", 0.03),
            row("a", "b / c", "without wordnet", 0.04),
        ]
    }
    chart = impact_deltas(result)
    assert chart.shape == (2, 2) and chart.columns.name == "arm"
    assert chart.loc["'a / b' / 'c'", "all approved"] == pytest.approx(1.0)
    assert chart.loc["'a' / 'b / c'", "without wordnet"] == pytest.approx(4.0)
    # names that cannot be confused read as before
    plain_names = impact_deltas({"rows": [row("bias", "neutral", "all approved", 0.05)]})
    assert list(plain_names.index) == ["bias / neutral"] and DELTA not in plain_names.columns
    at = AppTest.from_function(draw_deltas, args=(result,), default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]


def test_api_errors_read_as_the_apis_message_and_a_status_only_for_a_servers_failure() -> None:
    from review_ui.client import ApiError

    assert str(ApiError(409, "the variant changed since you loaded it", {"field": "version"})) == (
        "the variant changed since you loaded it (version)"
    )
    assert str(ApiError(0, "cannot reach the API at http://x")) == "cannot reach the API at http://x"
    assert str(ApiError(503, "the database is busy")) == "The server could not do it (HTTP 503): the database is busy"


# A second attacker review: a submission shown without its labels or submitter, a CRLF text stored as an edit
# when saved unchanged, and a sign-in that landed on an empty dataset -------------------------------------------


def test_a_submitted_text_shows_its_labels_and_who_submitted_it() -> None:
    """A text sent to POST /augment came under "Variants without a source text" as "unknown method", with no
    labels: its approver approved the submitter's labels without seeing them. The card carries them, drawn as a
    family header's badges are (review_cards.js labelBadges), and says who submitted it."""
    labels = {"message": "policy", "bias": "neutral"}
    item = variant("Vote on Tuesday.", parent_id=None, method=None, method_params=None, model_name=None, seed=None)
    item.update(origin="submitted", labels=labels, submitted_by="lena-lead", similarity=None, label_consistency=None)
    card = build_card(item, None, 1)
    assert card["labels"] == [("bias", "neutral"), ("message", "policy")]
    assert card["provenance"] == "submitted by lena-lead" and "unknown method" not in card["provenance"]
    # Without the name (an account since removed) it still says what it is.
    assert provenance({**item, "submitted_by": None}) == "submitted text"
    # A variant has its source's header above it, with the labels: its card draws none of its own.
    assert build_card(variant("Vote on Tuesday."), family("Vote Tuesday."), 1)["labels"] is None
    js = (Path(__file__).parent.parent / "review_ui" / "static" / "review_cards.js").read_text()
    assert "labelBadges(card.labels" in js


def _node_module(tmp_path: Path, call: str) -> Any:
    """Run `call` (an expression over `m`, review_cards.js imported as a module) in Node; its JSON value."""
    import shutil
    import subprocess

    node = shutil.which("node")
    if node is None:  # .ci/system-deps.sh installs it (as root): CI must not pass over this check
        if os.environ.get("CI"):
            pytest.fail("Node.js is not installed: run `make system-deps` as root")
        pytest.skip("Node.js is not installed (make system-deps installs it as root)")
    module = tmp_path / "review_cards.mjs"
    module.write_text((Path(__file__).parent.parent / "review_ui" / "static" / "review_cards.js").read_text())
    script = f"import * as m from {json.dumps(module.as_uri())}; console.log(JSON.stringify({call}));"
    done = subprocess.run(
        [node, "--input-type=module", "-e", script], capture_output=True, text=True, timeout=30, check=True
    )
    return json.loads(done.stdout)


def test_saving_a_crlf_text_unchanged_approves_it_instead_of_storing_an_edit(tmp_path: Path) -> None:
    """A textarea gives every line break back as "\\n": E then Ctrl+Enter on a text with "\\r\\n" (CSV imports keep
    them inside quoted fields) or a lone "\\r" compared unequal, stored an edit (votes withdrawn, CRs lost)."""
    cases = [
        ["Line one\r\nLine two", "Line one\nLine two"],
        ["Line one\rLine two\r\n", "Line one\nLine two\n"],
        ["Line one\nLine two", "Line one\nLine two"],
        ["Line one\r\nLine two", "Line one\nLine 2"],
        ["Line one\r\nLine two", "  \n "],
    ]
    saved = _node_module(tmp_path, f"{json.dumps(cases)}.map(([text, typed]) => m.savedAs({{text}}, typed))")
    assert saved == [
        {"op": "approve"},
        {"op": "approve"},
        {"op": "approve"},
        {"op": "edit", "text": "Line one\nLine 2"},  # a real edit is stored as typed, LF and all
        None,  # an empty text is no save (the editor says so)
    ]
    js = (Path(__file__).parent.parent / "review_ui" / "static" / "review_cards.js").read_text()
    assert "savedAs(card, text)" in js and "text !== card.text" not in js


def test_sign_in_lands_on_the_dataset_with_the_members_pending_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Signed in, a member landed on the first dataset by name, empty, while another held their pending work.
    The chooser opens on the dataset with most variants they can still review; a choice made earlier in the
    session stays."""
    from review_ui import state

    asked: list[dict[str, Any]] = []

    class Api:
        def datasets(self) -> list[dict[str, Any]]:
            return [{"name": n} for n in ("a-empty", "b-refused", "c-work", "d-little")]

        def review_queue(self, name: str, **params: Any) -> dict[str, Any]:
            asked.append(params)
            if name == "b-refused":
                raise ApiError(403, "not a member")
            return {"total": {"a-empty": 0, "c-work": 7, "d-little": 2}[name], "items": []}

    monkeypatch.setattr(state, "client", lambda: Api())

    def page() -> None:
        from review_ui.state import pick_dataset

        pick_dataset()

    at = AppTest.from_function(page, default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox[0].value == "c-work"
    assert at.session_state["current_dataset"] == "c-work"
    assert all(p.get("unreviewed") == "true" and p.get("page_size") == 1 for p in asked)
    assert not at.error, "a dataset the API refuses is passed over in silence"
    # an explicit earlier choice is kept, and no queue is read for it
    asked.clear()
    chosen = AppTest.from_function(page, default_timeout=60)
    chosen.session_state["current_dataset"] = "d-little"
    chosen.run()
    assert chosen.selectbox[0].value == "d-little" and not asked
    # no pending work anywhere: the first by name, as before
    assert state.dataset_with_work(Api(), ["a-empty"]) is None
