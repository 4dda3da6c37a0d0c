"""Headless Chromium over a locally started API and UI: what the browser test, the review UI benchmark and
docs/screenshots.py share.

Debian's /usr/bin/chromium (never a browser download), with the switches that keep it quiet and offline; the API
and the UI as `augloop serve` and `augloop ui` run them, each a subprocess on a free loopback port.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from review_ui import SERVER_PATH, STREAMLIT_FLAGS
from tests.pg_server import free_port

ROOT = Path(__file__).resolve().parent.parent

CHROMIUM = "/usr/bin/chromium"
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


def wait_http(url: str, proc: subprocess.Popen | None = None, timeout: float = 90) -> None:
    """Until `url` answers 200; RuntimeError when `proc` (the server) exits first or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not come up in {timeout} s")


def settle(page: Any) -> None:
    """Wait until the script run that the last action started has finished (Streamlit marks it on stApp)."""
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]')


def seeded_review_database(directory: Path) -> tuple[str, Any, Any]:
    """A migrated SQLite file in `directory` holding the review fixtures' data (tests/review_fixtures.py):
    (its URL, an engine on it, the seeded ReviewData). Dispose of the engine before the stack starts."""
    from db.migrate import upgrade_to_head
    from db.session import make_engine
    from tests.review_fixtures import seed_review_data

    db_url = f"sqlite:///{directory / 'augloop.db'}"
    engine = make_engine(db_url)
    upgrade_to_head(engine)
    return db_url, engine, seed_review_data(engine)


def open_page(pw: Any, *, height: int, timeout_ms: int) -> tuple[Any, Any]:
    """(browser, page): a 1440-pixel-wide page in Debian's Chromium, waiting up to `timeout_ms` per action."""
    browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    page = browser.new_page(viewport={"width": 1440, "height": height})
    page.set_default_timeout(timeout_ms)
    return browser, page


class Stack:
    """`augloop serve` and the review UI (`streamlit run review_ui/server.py`, as `augloop ui` starts it) over the
    database `db_url`, with `data_dir` as the data directory and hub models offline. `env` (the stack's
    environment, `more_env` added) is ready before the stack starts, for CLI commands against the same database.
    As a context manager: start both, wait until both answer, and on exit stop every process it started (by its
    own pid). Each process's output goes to `logs`/<name>.log, or nowhere without `logs`."""

    def __init__(
        self, db_url: str, data_dir: Path | str, *, logs: Path | None = None, more_env: dict[str, str] | None = None
    ) -> None:
        self.api_port, self.ui_port = free_port(), free_port()
        self.api = f"http://127.0.0.1:{self.api_port}"
        self.ui = f"http://127.0.0.1:{self.ui_port}"
        self.env = {
            **os.environ,
            "AUGLOOP_DATABASE_URL": db_url,
            "AUGLOOP_DATA_DIR": str(data_dir),
            "AUGLOOP_API_URL": self.api,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            **(more_env or {}),
        }
        self.logs = logs
        self.procs: list[subprocess.Popen] = []
        self._files: list[Any] = []

    def spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        """Start `python args...` in the repository with the stack's environment; stopped with the stack."""
        out: Any = subprocess.DEVNULL
        if self.logs is not None:
            out = open(self.logs / f"{name}.log", "w")  # noqa: SIM115 - open for the life of the process
            self._files.append(out)
        proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def __enter__(self) -> Stack:
        try:
            api = self.spawn("api", ["-m", "augloop", "serve", "--port", str(self.api_port)])
            ui = self.spawn(
                "ui",
                [
                    "-m",
                    "streamlit",
                    "run",
                    str(SERVER_PATH),
                    *STREAMLIT_FLAGS,
                    f"--server.port={self.ui_port}",
                    "--server.address=127.0.0.1",
                    "--server.fileWatcherType=none",
                ],
            )
            wait_http(f"{self.api}/healthz", api)
            wait_http(f"{self.ui}/_stcore/health", ui)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for file in self._files:
            file.close()
