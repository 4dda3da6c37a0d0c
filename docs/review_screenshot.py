"""Make docs/review_page.png: the Review page on the example dataset with real WordNet variants.

Runs the product end to end in a temporary directory, through its public commands only: import the example
dataset, plan and generate WordNet variants for the `message` task, run the worker until the queue is empty,
record a few decisions through the API, start `augloop serve` and the UI, then photograph the Review page in
headless Chromium (Debian's /usr/bin/chromium; never a browser download).

    .venv/bin/python docs/review_screenshot.py [--out docs/review_page.png]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "political_social_media.csv"
DATASET = "political_social_media"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def augloop(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "augloop", *args],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout


def wait_http(url: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{url} did not come up")


def decide_some(api: httpx.Client) -> None:
    """A morning's work on the `other` class, so that the progress table has something to show."""
    queue = api.get(f"/datasets/{DATASET}/review-queue", params={"task": "message", "label": "other"}).json()
    for i, v in enumerate(queue["items"][:30]):
        body = (
            {"decision": "reject", "version": v["version"], "reason": "meaning_changed"}
            if i % 4 == 0
            else {"decision": "approve", "version": v["version"]}
        )
        api.post(f"/samples/{v['id']}/decision", json=body).raise_for_status()


def photograph(ui: str, token: str, out: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=60_000)  # a loaded machine renders slowly; the default is 5 s

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1250})
        page.set_default_timeout(60_000)
        page.goto(ui)
        page.get_by_label("API token").fill(token)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_text("Source #").first).to_be_visible()
        for key, option in (("f_task", "message"), ("f_label", "attack")):  # one minority class at a time
            page.locator(f".st-key-{key}").get_by_role("combobox").click()
            page.get_by_role("option", name=option, exact=True).click()
            page.wait_for_timeout(800)
        expect(page.get_by_text("variants match").first).to_be_visible()
        page.wait_for_timeout(1500)
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out))
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "review_page.png")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="augloop-shot-") as tmp:
        api_port, ui_port = free_port(), free_port()
        env = {
            **os.environ,
            "AUGLOOP_DATA_DIR": tmp,
            "AUGLOOP_DATABASE_URL": f"sqlite:///{tmp}/augloop.db",
            "AUGLOOP_API_URL": f"http://127.0.0.1:{api_port}",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
        }
        augloop(env, "import", str(EXAMPLE), "-d", DATASET, "-t", "bias", "-t", "message", "-t", "audience")
        augloop(env, "augment", "run", DATASET, "--methods", "wordnet", "--task", "message")
        augloop(env, "worker", "--burst")
        token = augloop(env, "token", "create", "--name", "maria").strip().splitlines()[-1]
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "augloop", "serve", "--port", str(api_port)],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
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
                    "--client.toolbarMode=viewer",
                ],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            ),
        ]
        try:
            wait_http(f"http://127.0.0.1:{api_port}/healthz")
            wait_http(f"http://127.0.0.1:{ui_port}/_stcore/health")
            with httpx.Client(
                base_url=f"http://127.0.0.1:{api_port}/api/v1", headers={"Authorization": f"Bearer {token}"}
            ) as api:
                decide_some(api)
            photograph(f"http://127.0.0.1:{ui_port}", token, args.out)
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(20)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
