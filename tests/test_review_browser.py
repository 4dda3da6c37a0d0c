"""A real browser on the real stack: `augloop serve` and `streamlit run` as subprocesses on loopback, a seeded
SQLite file, headless Chromium driven by Playwright. Sign in, approve, reject with a reason, edit then
approve, bulk-approve a family, approve with the keyboard, check that hostile text renders literally, then
check the database through the API.

Set AUGLOOP_SCREENSHOT_DIR to keep a screenshot of the review page (docs/review_page.png is made this way).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.browser_stack import CHROMIUM, open_page, wait_http
from tests.review_fixtures import free_port, issue_token, seed_review_data

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_MS = 60_000


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[dict]:
    """Seeded database, API and UI processes; stopped (by their own pid) when the test ends."""
    from db.migrate import upgrade_to_head
    from db.session import make_engine

    db_path = tmp_path / "augloop.db"
    engine = make_engine(f"sqlite:///{db_path}")
    upgrade_to_head(engine)
    data = seed_review_data(engine)
    token = issue_token(engine, "erin", "annotator")
    engine.dispose()
    api_port, ui_port = free_port(), free_port()
    env = {
        **os.environ,
        "AUGLOOP_DATABASE_URL": f"sqlite:///{db_path}",
        "AUGLOOP_DATA_DIR": str(tmp_path),
        "AUGLOOP_API_URL": f"http://127.0.0.1:{api_port}",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    logs = {name: open(tmp_path / f"{name}.log", "w") for name in ("api", "ui")}  # noqa: SIM115
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "augloop", "serve", "--port", str(api_port)],
            cwd=ROOT,
            env=env,
            stdout=logs["api"],
            stderr=subprocess.STDOUT,
        ),
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamlit",
                "run",
                str(ROOT / "review_ui" / "app.py"),
                "--server.headless=true",
                f"--server.port={ui_port}",
                "--server.address=127.0.0.1",
                "--browser.gatherUsageStats=false",
                "--server.fileWatcherType=none",
            ],
            cwd=ROOT,
            env=env,
            stdout=logs["ui"],
            stderr=subprocess.STDOUT,
        ),
    ]
    try:
        wait_http(f"http://127.0.0.1:{api_port}/healthz", procs[0])
        wait_http(f"http://127.0.0.1:{ui_port}/_stcore/health", procs[1])
        yield {
            "api": f"http://127.0.0.1:{api_port}",
            "ui": f"http://127.0.0.1:{ui_port}",
            "token": token,
            "data": data,
            "logs": tmp_path,
        }
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in logs.values():
            log.close()


def one(page, selector: str):  # type: ignore[no-untyped-def]
    """The element with this key, once Streamlit has finished re-rendering (during a rerun the previous run's
    copy of an element can still be on the page next to the new one)."""
    from playwright.sync_api import expect

    locator = page.locator(selector)
    expect(locator).to_have_count(1)
    return locator


def settle(page) -> None:  # type: ignore[no-untyped-def]
    """Wait until the script run that the last action started has finished (Streamlit marks it on stApp)."""
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]')


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


def test_review_in_a_real_browser(stack: dict) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (make system-deps installs it)")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=60_000)  # a loaded machine renders slowly; the default is 5 s

    data = stack["data"]
    family = data.sources
    v_ok, v_no, v_edit = data.variants[family[0]]
    bulk_family = family[2]
    dialogs: list[str] = []
    with sync_playwright() as pw:
        browser, page = open_page(pw, height=1100, timeout_ms=TIMEOUT_MS)
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(stack["ui"])

        # Sign in; the token never shows up in the URL.
        page.get_by_label("API token").fill(stack["token"])
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("heading", name="Review")).to_be_visible()
        expect(page.get_by_text("Source #", exact=False).first).to_be_visible()
        assert stack["token"] not in page.url
        settle(page)
        if os.environ.get("AUGLOOP_SCREENSHOT_DIR"):
            out = Path(os.environ["AUGLOOP_SCREENSHOT_DIR"])
            out.mkdir(parents=True, exist_ok=True)
            page.wait_for_timeout(500)
            page.screenshot(path=str(out / "review_page.png"))

        # Hostile text renders as characters: no script ran, no link, no image.
        hostile = one(page, f".st-key-variant-{data.hostile}")
        hostile.scroll_into_view_if_needed()
        text = hostile.inner_text()
        assert "<script>alert(1)</script>" in text
        assert "[click me](http://evil.example)" in text and "![pic](http://evil.example/x.png)" in text
        assert page.locator("a[href*='evil.example']").count() == 0
        assert page.locator("img[src*='evil.example']").count() == 0

        # Approve one.
        # (Streamlit gives every keyed widget a `st-key-<key>` class: cards and buttons are found by key.)
        settle(page)
        one(page, f".st-key-ok_{v_ok}_1 button").click()
        expect(page.get_by_text(f"Variant #{v_ok} approved")).to_be_visible()

        # Reject one with a reason.
        choose(page, f".st-key-reason_{v_no}", "label changed")
        settle(page)
        one(page, f".st-key-no_{v_no}_1 button").click()
        expect(page.get_by_text(f"Variant #{v_no} rejected")).to_be_visible()

        # Edit then approve.
        settle(page)
        one(page, f".st-key-pop_{v_edit} button").click()
        box = one(page, f".st-key-edit_{v_edit}_1 textarea")
        box.fill("We must protect Social Security for every senior.")
        one(page, f".st-key-save_{v_edit}_1 button").click()
        expect(page.get_by_text(f"Variant #{v_edit} edited and approved")).to_be_visible()

        # Bulk-approve a whole family.
        settle(page)
        button = one(page, f".st-key-fam_ok_{bulk_family} button")
        expect(button).to_have_text("Approve family (3)")
        button.click()
        expect(page.get_by_text("Bulk approve: 3 variants (3 approved)")).to_be_visible()

        # Keyboard: A approves the first variant of the page.
        first = data.variants[family[-1]][-1]  # family order: newest source, newest variant first
        settle(page)
        page.get_by_role("heading", name="Review").click()  # focus the page, not an input
        page.keyboard.press("a")
        expect(page.get_by_text(f"Variant #{first} approved")).to_be_visible()
        browser.close()
    assert dialogs == []

    with httpx.Client(
        base_url=stack["api"] + "/api/v1", headers={"Authorization": f"Bearer {stack['token']}"}
    ) as api:

        def sample(i: int) -> dict:
            return api.get(f"/samples/{i}").json()

        assert sample(v_ok)["sample"]["review_status"] == "approved"
        rejected = sample(v_no)
        assert rejected["sample"]["review_status"] == "rejected"
        assert (
            rejected["reviews"][0]["reason"] == "label_changed" and rejected["reviews"][0]["user"] == "erin"
        )
        edited = sample(v_edit)["sample"]
        assert edited["review_status"] == "approved"
        assert edited["text"] == "We must protect Social Security for every senior."
        assert edited["generated_text"] == "We must protect Social Security for our elderly."
        assert all(sample(v)["sample"]["review_status"] == "approved" for v in data.variants[bulk_family])
        assert sample(first)["sample"]["review_status"] == "approved"
        left = api.get("/datasets/rev/review-queue").json()["total"]
        assert left == 19 - 3 - 3 - 1
    if os.environ.get("AUGLOOP_SCREENSHOT_DIR"):
        shutil.copy(stack["logs"] / "ui.log", Path(os.environ["AUGLOOP_SCREENSHOT_DIR"]) / "ui.log")
