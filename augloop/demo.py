"""`augloop demo`: the whole loop on one machine with the embedded defaults.

Imports the bundled example dataset (once), issues an admin and an annotator token, then supervises the API,
one worker and the UI as child processes. Ctrl-C (or SIGTERM) stops them all; nothing is left running.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console

from core.encoders import offline_minilm_path
from core.settings import get_settings

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = REPO_ROOT / "examples" / "political_social_media.csv"
EXAMPLE_NAME = "political_social_media"
EXAMPLE_TASKS = ["bias", "message", "audience"]

console = Console()


def import_example() -> None:
    """The example dataset, once, with what its import says (as `augloop import` says it: the near-duplicate
    texts across its splits are worth reading before training)."""
    from augloop.cli import show_import
    from db.session import get_engine, session_scope
    from services.datasets import all_datasets, import_upload
    from services.importing import ImportSpec

    with session_scope(get_engine()) as session:
        if any(d.name == EXAMPLE_NAME for d in all_datasets(session, None)):
            console.print(f"dataset {EXAMPLE_NAME} already imported")
            return
        with EXAMPLE.open("rb") as upload:
            result = import_upload(session, upload, ImportSpec(dataset=EXAMPLE_NAME, tasks=EXAMPLE_TASKS), EXAMPLE.name)
    show_import(result)


DEMO_USERS = ("demo-admin", "demo-annotator")


def issue_tokens() -> dict[str, str]:
    """A new admin and annotator token; the ones an earlier start of the demo printed are revoked (each start
    left two more tokens that never expire)."""
    from core.errors import NotFoundError
    from db.models import DEFAULT_PROJECT
    from db.session import get_engine, session_scope
    from services.projects import add_member
    from services.tokens import issue, revoke

    with session_scope(get_engine()) as session:
        for name in DEMO_USERS:
            with contextlib.suppress(NotFoundError):  # a first start: no such user yet
                revoke(session, user_name=name)
        admin_name, annotator_name = DEMO_USERS
        admin = issue(session, admin_name, "admin").token
        annotator = issue(session, annotator_name, "annotator").token
        # The example dataset is in the default project: its annotator is one of that project's annotators.
        add_member(session, DEFAULT_PROJECT, annotator_name, "annotator")
    return {"admin": admin, "annotator": annotator}


def show_tokens(tokens: dict[str, str]) -> None:
    """The tokens last on their lines (a script reads the last word), what each may do before them."""
    console.print(
        f"admin token (the whole loop: Augment, Training, Impact, Tokens):  {tokens['admin']}", highlight=False
    )
    console.print(
        f"annotator token (Review, Datasets; sees what a lead starts):    {tokens['annotator']}", highlight=False
    )
    console.print("(the tokens an earlier start printed are revoked)", highlight=False)


def child_options() -> dict[str, Any]:
    """Each child in a session of its own: a terminal's Ctrl-C reaches the demo alone, which stops each child once
    (the API, sent the terminal's SIGINT and then the demo's SIGTERM, took the second for an impatient user and
    died in a traceback and "Aborted!"). On Linux a child is also sent SIGTERM when the demo dies, even by kill -9:
    the API, the worker and the UI went on running, holding their ports."""
    options: dict[str, Any] = {"start_new_session": True}
    if sys.platform.startswith("linux"):
        options["preexec_fn"] = partial(_stop_with_parent, os.getpid())
    return options


def _stop_with_parent(parent: int) -> None:
    """In the child before it runs: SIGTERM when the demo's process ends (prctl PR_SET_PDEATHSIG)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the demo died before the request was made: nothing would send it
        os.kill(os.getpid(), signal.SIGTERM)


def url_host(host: str) -> str:
    """`host` as a URL names the server listening there: an IPv6 address in brackets (`::1` made the URL's port
    ":1:8501", and the demo a traceback), the wildcard addresses as the loopback."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"[{host}]" if ":" in host else host


def _wait_ready(
    child: subprocess.Popen[bytes],
    url: str,
    timeout: float,
    token: str | None = None,
    stopped: Callable[[], bool] = lambda: False,
) -> bool:
    """Whether `child` answers `url` with 200 within `timeout`; False at once when it has exited or `stopped` says
    so (Ctrl-C meanwhile). The port was free a moment before, but another server may answer on it (another
    demo's, started meanwhile): a token issued in this database is refused (401) by an API on any other, and a
    child that failed to listen has exited."""
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and child.poll() is None and not stopped():
        try:
            if httpx.get(url, headers=headers, timeout=1).status_code == 200:
                return child.poll() is None
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    return False


def _wait_listening(
    child: subprocess.Popen[bytes], host: str, port: int, timeout: float, stopped: Callable[[], bool]
) -> bool:
    """Whether `child` (still running) has its port open within `timeout`: the UI's readiness, whatever path it
    serves under (with a base URL path its health check is elsewhere, and a UI up and serving was stopped)."""
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and child.poll() is None and not stopped():
        try:
            with socket.create_connection((url_host(host).strip("[]"), port), timeout=1):
                return child.poll() is None
        except OSError:
            time.sleep(0.3)
    return False


def show_augmenters() -> None:
    """What the worker can load, in the worker's own words (the Augment page shows the same)."""
    from workers.augment.availability import capabilities

    for method, status in capabilities().items():
        line = f"augmenter {method:<16}{status['state']}"
        if status.get("reason"):
            line += f": {status['reason']}"
        console.print(line, highlight=False, markup=False)


def run_demo(serve: bool = True) -> int:
    from augloop.cli import check_listenable, print_stats
    from augloop.console import fail
    from db.session import get_engine, session_scope
    from review_ui import APP_PATH
    from services.datasets import class_balance

    settings = get_settings()
    serve_ui = serve and APP_PATH.exists()
    if serve_ui and settings.api_port == settings.ui_port:  # each probe alone found the port free
        fail(f"AUGLOOP_API_PORT and AUGLOOP_UI_PORT are both {settings.api_port}: the API and the UI need a port each")
    if serve:  # before anything is imported or issued: a port in use (another demo's) stops the demo here, code 2
        check_listenable(settings.api_host, settings.api_port, "AUGLOOP_API_HOST/AUGLOOP_API_PORT")
    if serve_ui:
        check_listenable(settings.ui_host, settings.ui_port, "AUGLOOP_UI_HOST/AUGLOOP_UI_PORT", ipv4_unless_colon=True)
    console.print(f"database: {settings.resolved_database_url}")
    import_example()
    with session_scope(get_engine()) as session:
        print_stats(class_balance(session, EXAMPLE_NAME, None))
    tokens = issue_tokens()
    if not serve:
        show_tokens(tokens)
        return 0

    env = {
        **os.environ,
        "AUGLOOP_API_URL": f"http://{url_host(settings.api_host)}:{settings.api_port}",
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
        # the UI runs here: the API believes its X-Forwarded-For (each browser's address) from loopback
        "AUGLOOP_TRUSTED_PROXIES": os.environ.get("AUGLOOP_TRUSTED_PROXIES", '["127.0.0.1"]'),
    }
    encoder = offline_minilm_path()  # trains on a machine without hub access (the optional `demo` extra)
    if encoder and not settings.trainer_default_encoder:
        env["AUGLOOP_TRAINER_DEFAULT_ENCODER"] = encoder
    exe = [sys.executable, "-m", "augloop"]
    children: list[subprocess.Popen] = []
    stopping = failed = False

    def stop(*_args: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        api = subprocess.Popen([*exe, "serve"], env=env, **child_options())
        children.append(api)
        if not _wait_ready(api, f"{env['AUGLOOP_API_URL']}/api/v1/me", 60, tokens["annotator"], lambda: stopping):
            if stopping:  # Ctrl-C while it started: a stop, not a failure
                return 0
            console.print("[red]the API did not start; stopping[/]")
            return 1
        children.append(subprocess.Popen([*exe, "worker"], env=env, **child_options()))
        ui_url = None
        if serve_ui:
            ui = subprocess.Popen([*exe, "ui"], env=env, **child_options())
            children.append(ui)
            ui_url = f"http://{url_host(settings.ui_host)}:{settings.ui_port}"
            if not _wait_listening(ui, settings.ui_host, settings.ui_port, 60, lambda: stopping):
                if stopping:
                    return 0
                console.print("[red]the UI did not start; stopping[/]")
                return 1
        console.rule("augloop demo is running")
        console.print(f"API:              {env['AUGLOOP_API_URL']}/docs")
        if ui_url:
            console.print(f"UI:               {ui_url}")
        show_tokens(tokens)
        if env.get("AUGLOOP_TRAINER_DEFAULT_ENCODER"):
            console.print(f"training encoder: {env['AUGLOOP_TRAINER_DEFAULT_ENCODER']} (offline all-MiniLM-L6-v2)")
        show_augmenters()
        console.print(
            "The loop in the UI: Augment (plan and queue variants for the rare classes) → Review "
            "(approve, edit, reject) → Training (a run on originals + approved variants) → Impact "
            "(did augmentation help, per class).",
            highlight=False,
        )
        console.print("Ctrl-C stops everything.")
        while not stopping:
            for child in children:
                if child.poll() is not None:
                    console.print(f"[red]{child.args[-1]} exited with {child.returncode}; stopping[/]")
                    stopping = True
                    failed = failed or child.returncode != 0
            time.sleep(0.5)
        return 1 if failed else 0
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
        deadline = time.monotonic() + 20
        for child in children:
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        console.print("demo stopped; all processes ended")
