"""A real browser on the real stack: `augloop serve` and the UI as `augloop ui` runs it (`streamlit run
review_ui/server.py`) as subprocesses on loopback, a seeded SQLite file, headless Chromium driven by Playwright.
Sign in; move the focus with J/K and the arrows; approve, reject with a chosen reason and without one, edit,
approve a family and undo (U and Backspace) from the keyboard; check that hostile text renders literally, that
a decided card shows the stored reason, that a reload keeps the session (an HttpOnly cookie, never the token)
and the filters, and that signing out ends it; then check the database through the API.

Set AUGLOOP_SCREENSHOT_DIR to keep a screenshot of the review page (docs/review_page.png is made this way).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.browser_stack import CHROMIUM, CHROMIUM_ARGS, Stack, seeded_review_database, settle
from tests.review_fixtures import issue_token

pytestmark = pytest.mark.browser

TIMEOUT_MS = 60_000


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[dict]:
    """Seeded database, API and UI processes; stopped (by their own pid) when the test ends."""
    db_url, engine, data = seeded_review_database(tmp_path)
    token = issue_token(engine, "erin", "annotator")
    score_two_attack_variants(engine, data)
    engine.dispose()
    with Stack(db_url, tmp_path, logs=tmp_path) as running:
        yield {"api": running.api, "ui": running.ui, "token": token, "data": data, "logs": tmp_path}


def score_two_attack_variants(engine, data) -> None:  # type: ignore[no-untyped-def]
    """Label-model scores on two variants of the `attack` family (intended: bias partisan, message attack): the
    first flagged (p(attack) 0.30, below what 9 in 10 of attack's val texts get), the second not (0.30 is within
    what they get: the model's `policy` there is unheeded)."""
    from sqlalchemy import update

    from db.models import Sample
    from db.session import session_scope

    probs = {"bias": {"neutral": 0.2, "partisan": 0.8}, "message": {"attack": 0.3, "policy": 0.6, "media": 0.1}}
    scored = {"run_id": 4, "kind": "single", "val_macro_f1": 0.5, "chosen": False, "probs": probs}
    first, second = data.variants[data.sources[3]][:2]
    with session_scope(engine) as s:
        below = {"bias": {"partisan": 0.5}, "message": {"attack": 0.4}}
        s.execute(
            update(Sample)
            .where(Sample.id == first)
            .values(label_flag=True, scores={"label_model": {**scored, "flag_below": below}})
        )
        below = {"bias": {"partisan": 0.5}, "message": {"attack": 0.12}}
        unheeded = {**scored, "flag_below": below, "unheeded": {"message": "policy"}}
        s.execute(update(Sample).where(Sample.id == second).values(label_flag=False, scores={"label_model": unheeded}))


def one(page, selector: str):  # type: ignore[no-untyped-def]
    """The element with this key, once Streamlit has finished re-rendering (during a rerun the previous run's
    copy of an element can still be on the page next to the new one)."""
    from playwright.sync_api import expect

    locator = page.locator(selector)
    expect(locator).to_have_count(1)
    return locator


def choose(page, selector: str, option: str) -> None:  # type: ignore[no-untyped-def]
    """Pick an option of a selectbox; reopen the list if a rerun replaced the box as it opened."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for attempt in range(3):
        settle(page)
        one(page, selector).get_by_role("combobox").click()
        try:
            page.get_by_role("option", name=option).click(timeout=5_000)
            return
        except PlaywrightTimeout:
            if attempt == 2:
                raise


def focus(page) -> str:  # type: ignore[no-untyped-def]
    return page.get_attribute(".rv-root", "data-focus")


def card(page, sample_id: int):  # type: ignore[no-untyped-def]
    return page.locator(f"#rv-card-{sample_id}")


def stored(page, sample_id: int, status: str) -> None:  # type: ignore[no-untyped-def]
    """Wait until the card shows the state the API stored (not the optimistic "saving…")."""
    from playwright.sync_api import expect

    expect(page.locator(f'#rv-card-{sample_id}[data-status="{status}"]:not([data-saving])')).to_have_count(1)


def test_review_in_a_real_browser(stack: dict) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (make system-deps installs it)")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=60_000)  # a loaded machine renders slowly; the default is 5 s

    data = stack["data"]
    # Family order (the default sort): newest source first, newest variant first.
    birthday = data.variants[data.sources[5]]  # three variants, then the hostile one
    interview = data.variants[data.sources[4]]
    attack = data.variants[data.sources[3]]
    a, b, c = birthday[:3]
    dialogs: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1440, "height": 1100})
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        # nothing is fetched from elsewhere: the favicon came from fonts.gstatic.com (an attacker's find)
        elsewhere: list[str] = []
        local = ("http://127.0.0.1", "http://localhost", "ws://127.0.0.1", "ws://localhost", "data:", "blob:")
        context.on("request", lambda r: None if r.url.startswith(local) else elsewhere.append(r.url))
        page.goto(stack["ui"])

        # Sign in; the token never shows up in the URL, the page's cookies or its storage.
        page.get_by_label("API token").fill(stack["token"])
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("heading", name="Review")).to_be_visible()
        expect(page.locator(".rv-card")).to_have_count(19)
        assert stack["token"] not in page.url
        cookies = {c["name"]: c for c in context.cookies()}
        session = cookies["augloop_session"]
        assert session["httpOnly"] and session["sameSite"] == "Strict" and stack["token"] not in session["value"]
        visible_to_scripts = page.evaluate(
            "document.cookie + JSON.stringify(localStorage) + JSON.stringify(sessionStorage)"
        )
        assert "augloop_session" not in visible_to_scripts and stack["token"] not in visible_to_scripts
        settle(page)
        if os.environ.get("AUGLOOP_SCREENSHOT_DIR"):
            out = Path(os.environ["AUGLOOP_SCREENSHOT_DIR"])
            out.mkdir(parents=True, exist_ok=True)
            page.wait_for_timeout(500)
            page.screenshot(path=str(out / "review_page.png"))

        # Hostile text renders as characters: no script ran, no link, no image.
        hostile = card(page, data.hostile)
        text = hostile.inner_text()
        assert "<script>alert(1)</script>" in text
        assert "[click me](http://evil.example)" in text and "![pic](http://evil.example/x.png)" in text
        assert page.locator("a[href*='evil.example']").count() == 0
        assert page.locator("img[src*='evil.example']").count() == 0
        # a right-to-left override in a text mirrors that text only, not the rest of its card
        assert hostile.locator(".rv-text").evaluate("n => getComputedStyle(n).unicodeBidi") == "isolate"
        # a long word in a line beside the text (a model's name, the text the augmenter wrote) wraps inside the
        # card: it ran over the Progress column (an attacker's find)
        for line in ("rv-provenance", "rv-small"):
            fits = hostile.evaluate(
                """(n, cls) => { const p = document.createElement('div'); p.className = cls;
                p.textContent = 'w'.repeat(600); n.appendChild(p);
                const ok = n.scrollWidth <= n.clientWidth; p.remove(); return ok; }""",
                line,
            )
            assert fits, line

        # The label model's line: a flag marks it; another label the model cannot judge says why, unmarked.
        flagged = card(page, attack[0]).locator(".rv-model")
        expect(flagged).to_have_class("rv-model rv-model-flag")
        expect(flagged.locator(".rv-pred-off")).to_have_text(
            "message policy (0.60) ≠ attack · p(attack) 0.300 < 0.400, what 9 in 10 of its val texts get"
        )
        unheeded = card(page, attack[1]).locator(".rv-model")
        expect(unheeded).to_have_class("rv-model")
        expect(unheeded).to_contain_text("message policy (0.60) ≠ attack · no flag: p(attack) 0.300 ≥ 0.120")
        assert unheeded.locator(".rv-pred-off").count() == 0

        # One card in focus; J/K and the arrows move it.
        assert focus(page) == str(data.hostile)
        expect(hostile).to_have_attribute("data-focused", "true")
        page.keyboard.press("j")
        assert focus(page) == str(c)
        page.keyboard.press("ArrowDown")
        assert focus(page) == str(b)
        page.keyboard.press("k")
        assert focus(page) == str(c)

        # A approves the card in focus (not the first of the page); the focus moves on at once.
        page.keyboard.press("a")
        assert focus(page) == str(b)
        stored(page, c, "approved")
        expect(card(page, c).locator(".rv-status")).to_contain_text("approved by erin")
        assert card(page, data.hostile).get_attribute("data-status") == "pending"

        # A held key repeats its keydown every ~33 ms: only a press decides, not the repeats, which approved every
        # card they ran over unread (an attacker's find); J/K may repeat.
        page.evaluate(
            """() => { for (let i = 0; i < 5; i++) document.dispatchEvent(
                new KeyboardEvent('keydown', {key: 'a', repeat: true, bubbles: true, cancelable: true})); }"""
        )
        page.wait_for_timeout(500)
        assert focus(page) == str(b) and card(page, b).get_attribute("data-status") == "pending"

        # 3 picks a reason, X rejects with it; the card shows the stored reason.
        page.keyboard.press("3")
        expect(card(page, b).locator('[data-reason="ungrammatical"]')).to_have_attribute("aria-pressed", "true")
        page.keyboard.press("x")
        stored(page, b, "rejected")
        expect(card(page, b).locator(".rv-status")).to_contain_text("reason: ungrammatical")

        # X without a reason is stored as "unspecified", and says so.
        assert focus(page) == str(a)
        page.keyboard.press("x")
        stored(page, a, "rejected")
        expect(card(page, a).locator(".rv-status")).to_contain_text("reason: unspecified")

        # U undoes the last decision (an audited reversal): pending again, back in focus.
        page.keyboard.press("u")
        stored(page, a, "pending")
        expect(page.locator(".rv-root")).to_have_attribute("data-focus", str(a))
        expect(page.locator(".rv-notice")).to_contain_text("withdrawn")
        # ... and Backspace too.
        page.keyboard.press("a")
        stored(page, a, "approved")
        page.keyboard.press("Backspace")
        stored(page, a, "pending")

        # E edits the card in focus; Ctrl+Enter saves it as the annotator's approval of their own text, which
        # trains once another member approves it.
        page.locator(f"#rv-card-{interview[2]}").click()
        assert focus(page) == str(interview[2])
        page.keyboard.press("e")
        box = card(page, interview[2]).locator("textarea")
        expect(box).to_be_focused()
        box.fill("Watch my consultation on CNN this evening.")
        box.press("Control+Enter")
        stored(page, interview[2], "pending")
        expect(card(page, interview[2]).locator(".rv-status")).to_contain_text(
            "edited by erin · waiting for another member's approval"
        )

        # An empty text is not saved: the editor stays open and says why (it closed in silence).
        page.locator(f"#rv-card-{interview[1]}").click()
        page.keyboard.press("e")
        box = card(page, interview[1]).locator("textarea")
        box.fill("  \n ")
        box.press("Control+Enter")
        expect(page.locator(".rv-notice")).to_contain_text("An empty text cannot be saved")
        expect(box).to_be_focused()
        box.press("Escape")
        expect(card(page, interview[1]).locator("textarea")).to_have_count(0)
        stored(page, interview[1], "pending")

        # One editor at a time: opening another closes the first and keeps what was typed there. Two open editors
        # let Ctrl+Enter in one save the other card's text unchanged, an approval of a card never read, and lose
        # the draft (an attacker's find).
        page.locator(f"#rv-card-{interview[1]}").click()
        page.keyboard.press("e")
        card(page, interview[1]).locator("textarea").fill("A draft kept for later.")
        card(page, interview[0]).locator('[data-action="edit"]').click()
        expect(page.locator("textarea")).to_have_count(1)
        other = card(page, interview[0]).locator("textarea")
        expect(other).to_have_count(1)
        other.press("Control+Enter")  # unchanged: this card's approval, and only this card's
        stored(page, interview[0], "approved")
        stored(page, interview[1], "pending")
        page.locator(f"#rv-card-{interview[1]}").click()
        page.keyboard.press("e")
        expect(card(page, interview[1]).locator("textarea")).to_have_value("A draft kept for later.")
        card(page, interview[1]).locator("textarea").press("Escape")

        # An edit the API refuses (the text another sample has) reopens the editor with what was typed.
        page.locator(f"#rv-card-{interview[1]}").click()
        page.keyboard.press("e")
        box = card(page, interview[1]).locator("textarea")
        box.fill("Watch my consultation on CNN this evening.")
        box.press("Control+Enter")
        expect(page.locator(".rv-notice")).to_contain_text("duplicates sample")
        expect(card(page, interview[1]).locator("textarea")).to_have_value("Watch my consultation on CNN this evening.")
        card(page, interview[1]).locator("textarea").press("Escape")
        expect(card(page, interview[1]).locator("textarea")).to_have_count(0)

        # F approves the family of the card in focus.
        card(page, attack[0]).click()
        page.keyboard.press("f")
        for variant in attack:
            stored(page, variant, "approved")

        # The Rejected view shows what was stored; a reload keeps the session and the filter.
        choose(page, ".st-key-f_status", "rejected")
        expect(page.locator(".rv-card")).to_have_count(1)
        expect(card(page, b).locator(".rv-status")).to_contain_text("reason: ungrammatical")
        settle(page)
        page.reload()
        expect(page.locator(".rv-card")).to_have_count(1)
        expect(card(page, b).locator(".rv-status")).to_contain_text("reason: ungrammatical")
        expect(one(page, ".st-key-f_status").get_by_role("combobox")).to_have_value("rejected")
        assert page.get_by_label("API token").count() == 0
        # With one review the latest decision wins: a decided card can be overturned from its view.
        assert focus(page) == str(b)
        expect(card(page, b).locator('[data-action="reject"]')).to_be_disabled()  # already rejected
        page.keyboard.press("a")
        stored(page, b, "approved")
        # ... and back: an approved card may be rejected, so it shows the reasons the keys 1-6 pick (they were
        # drawn on pending cards only, and a reason picked here was invisible)
        expect(card(page, b).locator('[data-reason="ungrammatical"]')).to_have_count(1)

        # Signing out ends the session, in every tab: a key pressed in another tab of it shows the sign-in page
        # and sends nothing (a traceback stayed where its cards were: an attacker's find); a reload too.
        settle(page)
        other = context.new_page()
        other.set_default_timeout(TIMEOUT_MS)
        other.goto(stack["ui"])
        expect(other.get_by_role("heading", name="Review")).to_be_visible()
        settle(other)
        other.get_by_role("button", name="Sign out").click()
        expect(other.get_by_label("API token")).to_be_visible()
        page.keyboard.press("x")  # would reject b
        expect(page.get_by_label("API token")).to_be_visible()
        assert page.get_by_text("KeyError").count() == 0
        page.reload()
        expect(page.get_by_label("API token")).to_be_visible()
        browser.close()
    assert dialogs == [] and elsewhere == []

    with httpx.Client(base_url=stack["api"] + "/api/v1", headers={"Authorization": f"Bearer {stack['token']}"}) as api:

        def history(i: int) -> list[tuple[str, str | None]]:
            return [(r["decision"], r["reason"]) for r in api.get(f"/samples/{i}").json()["reviews"]]

        def status(i: int) -> str:
            return api.get(f"/samples/{i}").json()["sample"]["review_status"]

        assert history(c) == [("approve", None)]
        assert history(b) == [("reject", "ungrammatical"), ("approve", None)]
        assert history(a) == [("reject", "unspecified"), ("undo", None), ("approve", None), ("undo", None)]
        assert status(a) == "pending" and status(data.hostile) == "pending"
        edited = api.get(f"/samples/{interview[2]}").json()["sample"]
        assert edited["text"] == "Watch my consultation on CNN this evening." and edited["review_status"] == "pending"
        assert all(status(v) == "approved" for v in attack)
        left = api.get("/datasets/rev/review-queue").json()["total"]
        assert left == 19 - 1 - 1 - 1 - 3  # the edited card waits for another member's approval
    if os.environ.get("AUGLOOP_SCREENSHOT_DIR"):
        shutil.copy(stack["logs"] / "ui.log", Path(os.environ["AUGLOOP_SCREENSHOT_DIR"]) / "ui.log")
