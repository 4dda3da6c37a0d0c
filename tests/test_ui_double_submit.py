"""A double click on a button that makes something, in a real browser: the second click leaves the browser before
the page has re-run, so Streamlit runs the page again for it. Before review_ui.state.generation it issued a second
token and showed neither (the form had emptied itself, so the second submission had no name and the page showed
only that error), queued the training runs twice and showed the second pair only, and answered a made project
with "already exists". Now it makes one of each, and the page shows what was made."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.browser_stack import Stack, open_page, seeded_review_database, settle
from tests.review_fixtures import add_original, issue_token

pytestmark = pytest.mark.browser

TIMEOUT_MS = 60_000


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[dict]:
    from db.models import Dataset
    from db.session import session_scope

    db_url, engine, _data = seeded_review_database(tmp_path)
    with session_scope(engine) as s:  # val texts, for the training form to open
        ds = s.query(Dataset).filter_by(name="rev").one()
        add_original(s, ds, "Vote for the farm bill tomorrow.", {"bias": "partisan", "message": "policy"}, "val", "v0")
        add_original(s, ds, "Thanks to all who came tonight.", {"bias": "neutral", "message": "personal"}, "val", "v1")
    token = issue_token(engine, "ada", "admin")
    engine.dispose()
    with Stack(db_url, tmp_path, logs=tmp_path) as running:
        yield {"api": running.api + "/api/v1", "ui": running.ui, "token": token}


def click_twice(page, name: str, apart_ms: int) -> None:  # type: ignore[no-untyped-def]
    """Two clicks on the spot where the button is, `apart_ms` apart (0: a double click), whatever the page draws
    there meanwhile, as a hand does."""
    settle(page)
    box = page.get_by_role("button", name=name).bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    if apart_ms:
        page.mouse.click(x, y)
        page.wait_for_timeout(apart_ms)
        page.mouse.click(x, y)
    else:
        page.mouse.dblclick(x, y)
    page.wait_for_timeout(1_500)  # the reruns the clicks asked for have started
    settle(page)


def after_both(page) -> None:  # type: ignore[no-untyped-def]
    """Once the first click's outcome shows: time for a second request, had the page sent one, to land."""
    page.wait_for_timeout(1_500)
    settle(page)


def alerts(page, kind: str) -> list[str]:  # type: ignore[no-untyped-def]
    return page.locator(f'[data-testid="stAlertContent{kind}"]').all_inner_texts()


def test_a_double_click_makes_one_token_one_request_of_runs_and_one_project(stack: dict) -> None:
    from playwright.sync_api import expect, sync_playwright

    api = httpx.Client(base_url=stack["api"], headers={"Authorization": f"Bearer {stack['token']}"})

    def count(path: str, **params: str) -> int:
        return len(api.get(path, params=params).raise_for_status().json())

    with sync_playwright() as pw:
        browser, page = open_page(pw, height=2400, timeout_ms=TIMEOUT_MS)
        try:
            page.goto(stack["ui"])
            page.fill("input[type=password]", stack["token"])
            page.keyboard.press("Enter")
            expect(page.get_by_text("Sign out")).to_be_visible(timeout=TIMEOUT_MS)
            for _ in range(100):  # the session cookie, set by the page after sign-in, keeps the pages below signed in
                if any(c["name"] == "augloop_session" for c in page.context.cookies()):
                    break
                page.wait_for_timeout(100)

            # A token: one issued, and shown
            page.goto(stack["ui"] + "/tokens")
            page.get_by_label("User name").fill("newbie")
            click_twice(page, "Create token", 0)
            expect(page.locator('[data-testid="stCode"]')).to_be_visible(timeout=TIMEOUT_MS)
            after_both(page)
            issued = [t for t in api.get("/tokens").json() if t["name"] == "newbie"]
            assert len(issued) == 1, issued
            expect(page.locator('[data-testid="stCode"]')).to_contain_text(issued[0]["prefix"])
            expect(page.get_by_label("User name")).to_have_value("")  # a fresh form for the next one
            assert not alerts(page, "Error"), alerts(page, "Error")

            # Training runs: one request's (one seed), and the page names them
            page.goto(stack["ui"] + "/training")
            expect(page.get_by_role("button", name="Start training")).to_be_visible(timeout=TIMEOUT_MS)
            page.get_by_text("Also train the TF-IDF member").click()  # too few texts for its cross-validation
            settle(page)
            before = count("/training-runs", dataset="rev")
            click_twice(page, "Start training", 150)
            said = page.get_by_text("Queued training run(s)")
            expect(said).to_be_visible(timeout=TIMEOUT_MS)
            after_both(page)
            runs = api.get("/training-runs", params={"dataset": "rev"}).json()
            assert len(runs) - before == 1, (runs, alerts(page, "Error"), alerts(page, "Success"))
            assert re.findall(r"#(\d+)", said.inner_text()) == [str(runs[0]["id"])]
            assert not alerts(page, "Error"), alerts(page, "Error")

            # A project: one, and its success is what the page says (not "already exists")
            page.goto(stack["ui"] + "/projects")
            page.get_by_label("Project name (a slug: lower-case letters, digits, -)").fill("team-b")
            click_twice(page, "Create project", 0)
            expect(page.get_by_text("Created project team-b")).to_be_visible(timeout=TIMEOUT_MS)
            after_both(page)
            assert [p["name"] for p in api.get("/projects").json()].count("team-b") == 1
            assert not alerts(page, "Error"), alerts(page, "Error")
        finally:
            browser.close()
