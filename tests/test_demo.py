"""`augloop demo` as `make demo` runs it: imports the example, serves API + worker + UI, and Ctrl-C stops all."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.pg_server import free_port


def descendants(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            found |= {child} | descendants(child)
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().split()[2] if Path(f"/proc/{pid}/stat").exists() else "X"
    return state != "Z"


def demo_env(tmp_path: Path, api_port: int, ui_port: int) -> dict[str, str]:
    env = {
        **os.environ,
        "AUGLOOP_DATA_DIR": str(tmp_path / "var"),
        "AUGLOOP_API_PORT": str(api_port),
        "AUGLOOP_UI_PORT": str(ui_port),
        "AUGLOOP_API_URL": f"http://127.0.0.1:{api_port}",
        "COLUMNS": "120",
        # offline, with no hub model cached: as on a fresh laptop without internet
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(tmp_path / "empty-hub-cache"),
        "AUGLOOP_WORKER_PRESENCE_SECONDS": "0.5",
    }
    env.pop("AUGLOOP_DATABASE_URL", None)
    return env


def start_demo(tmp_path: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "augloop", "demo"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.slow
def test_demo_serves_the_loop_and_ctrl_c_stops_everything(tmp_path):
    api_port, ui_port = free_port(), free_port()
    demo = start_demo(tmp_path, demo_env(tmp_path, api_port, ui_port))
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = demo.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C stops everything" in line:
                break
        out = "".join(lines)
        assert "imported 5000 samples into political_social_media" in out, out
        token = next(ln.split()[-1] for ln in lines if ln.startswith("annotator token"))
        me = httpx.get(f"http://127.0.0.1:{api_port}/api/v1/me", headers={"Authorization": f"Bearer {token}"})
        assert me.json()["role"] == "annotator"
        stats = httpx.get(
            f"http://127.0.0.1:{api_port}/api/v1/datasets/political_social_media/stats",
            headers={"Authorization": f"Bearer {token}"},
        ).json()
        assert stats["tasks"]["message"]["labels"]["other"]["train_original"] == 99
        # The console and the API (from the demo's worker) say which augmenters run, and what to set for the others.
        assert "augmenter wordnet         ready" in out and "AUGLOOP_MLM_MODEL" in out, out
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            augmenters = {
                s["method"]: s
                for s in httpx.get(
                    f"http://127.0.0.1:{api_port}/api/v1/datasets/political_social_media/augmenters",
                    headers={"Authorization": f"Bearer {token}"},
                ).json()
            }
            if augmenters["wordnet"]["state"] != "no_worker":
                break
            time.sleep(0.3)
        assert augmenters["wordnet"]["state"] == "ready", augmenters
        assert augmenters["mlm"]["state"] == "unavailable" and augmenters["mlm"]["setting"] == "AUGLOOP_MLM_MODEL"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{ui_port}/", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            pytest.fail("the UI did not answer")
        children = descendants(demo.pid)
        assert len(children) >= 3  # API, worker, UI
        demo.send_signal(signal.SIGINT)
        demo.wait(60)
        assert demo.returncode == 0
        time.sleep(0.5)
        assert not [pid for pid in children if alive(pid)], "a child process outlived the demo"
    finally:
        stop_everything(demo)


def stop_everything(demo: subprocess.Popen[str]) -> None:
    """A test that failed midway leaves nothing running: the demo's children first (a CI run left an API and a
    worker behind when only the demo was killed)."""
    for pid in descendants(demo.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if demo.poll() is None:
        demo.kill()
        demo.wait(10)


def wait_until_running(demo: subprocess.Popen[str]) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = demo.stdout.readline() if demo.stdout else ""
        if not line:
            break
        lines.append(line)
        if "Ctrl-C stops everything" in line:
            return lines
    pytest.fail("the demo did not start:\n" + "".join(lines))


@pytest.mark.slow
def test_ctrl_c_in_a_terminal_stops_the_demo_once_and_kill_9_leaves_nothing_running(tmp_path) -> None:
    """A terminal's Ctrl-C reaches its whole process group: the API took the demo's own stop as a second Ctrl-C and
    died in a traceback and "Aborted!". And a demo killed with kill -9 left its API, worker and UI running,
    holding their ports."""
    env = demo_env(tmp_path, free_port(), free_port())
    demo = subprocess.Popen(
        [sys.executable, "-m", "augloop", "demo"],
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a shell gives a command: Ctrl-C is sent to the group
    )
    try:
        wait_until_running(demo)
        os.killpg(demo.pid, signal.SIGINT)
        out, _ = demo.communicate(timeout=60)
        assert demo.returncode == 0, out
        assert "Aborted!" not in out and "Traceback" not in out, out
        assert "demo stopped; all processes ended" in out
    finally:
        stop_everything(demo)
    demo = start_demo(tmp_path, env)
    children: set[int] = set()
    try:
        wait_until_running(demo)
        children = descendants(demo.pid)
        assert len(children) >= 3
        demo.kill()
        demo.wait(10)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and [pid for pid in children if alive(pid)]:
            time.sleep(0.3)
        assert not [pid for pid in children if alive(pid)], "a child outlived the demo's kill -9"
    finally:
        stop_everything(demo)
        for pid in children:  # orphans, no longer the demo's descendants
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("held", ["api", "ui"])
def test_demo_on_a_port_in_use_exits_2_naming_its_setting_before_anything_starts(tmp_path, held):
    # as when another `augloop demo` holds 8000 and 8501: it printed the banner with tokens of its own database
    # (the other demo's API answered its readiness check), then its children failed to listen, and it exited 0
    ports = {"api": free_port(), "ui": free_port()}
    env = demo_env(tmp_path, ports["api"], ports["ui"])
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", ports[held]))
        listener.listen()
        demo = subprocess.run(
            [sys.executable, "-m", "augloop", "demo"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    out = " ".join((demo.stdout + demo.stderr).split())  # as read, whatever the terminal's width wrapped
    assert demo.returncode == 2, out
    setting = {"api": "AUGLOOP_API_PORT", "ui": "AUGLOOP_UI_PORT"}[held]
    assert f"cannot listen on 127.0.0.1:{ports[held]}" in out and setting in out, out
    assert "Address already in use" in out, out
    assert "augloop demo is running" not in out and "token" not in out, out
    assert "imported" not in out, out  # found before anything starts


@pytest.mark.slow
def test_demo_exits_1_when_one_of_its_processes_fails(tmp_path):
    """A child that died said "worker exited with -9; stopping", and the demo exited 0."""
    demo = start_demo(tmp_path, demo_env(tmp_path, free_port(), free_port()))
    try:
        for line in demo.stdout:
            if "Ctrl-C stops everything" in line:
                break
        worker = next(
            pid for pid in descendants(demo.pid) if b"worker" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        )
        os.kill(worker, signal.SIGKILL)
        out = demo.communicate(timeout=60)[0]
        assert demo.returncode == 1, out
        assert "worker exited with -9; stopping" in out, out
    finally:
        if demo.poll() is None:
            demo.kill()


def test_the_demo_waits_for_its_own_server_not_any_server_on_the_port():
    """Any server answering below 500 on the port was taken for the demo's API (another demo's answered)."""
    import http.server
    import threading

    from augloop.demo import _wait_ready

    other = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1)"])  # ours, failing to listen
    try:
        started = time.monotonic()
        url = f"http://127.0.0.1:{other.server_address[1]}/api/v1/me"
        assert not _wait_ready(child, url, 30, "aug_a-token-of-our-database")
        assert time.monotonic() - started < 15  # told by the child's exit, not by the timeout
    finally:
        child.kill()
        child.wait()
        other.shutdown()
        other.server_close()


def test_demo_with_one_port_for_the_api_and_the_ui_exits_2_before_anything_starts(tmp_path):
    """Each port's probe found it free, so the demo imported, issued tokens, started the API and the worker, and
    then the UI failed to listen (an attacker's find)."""
    port = free_port()
    env = demo_env(tmp_path, port, port)
    demo = subprocess.run(
        [sys.executable, "-m", "augloop", "demo"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    out = " ".join((demo.stdout + demo.stderr).split())
    assert demo.returncode == 2, out
    assert f"AUGLOOP_API_PORT and AUGLOOP_UI_PORT are both {port}" in out and "imported" not in out, out


def test_the_demo_names_an_ipv6_host_in_brackets_and_stops_waiting_on_ctrl_c():
    """AUGLOOP_UI_HOST=::1 made the UI's URL 'http://::1:8501' (httpx: invalid port, a traceback), and a Ctrl-C
    while the API started read 'the API did not start' and exit code 1 (an attacker's finds)."""
    from augloop.demo import _wait_listening, _wait_ready, url_host

    assert url_host("::1") == "[::1]" and url_host("::") == "[::1]" and url_host("0.0.0.0") == "127.0.0.1"
    assert url_host("127.0.0.1") == "127.0.0.1" and url_host("localhost") == "localhost"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        started = time.monotonic()
        assert not _wait_ready(sleeper, f"http://127.0.0.1:{free_port()}/", 20, stopped=lambda: True)
        assert not _wait_listening(sleeper, "127.0.0.1", free_port(), 20, lambda: True)
        assert time.monotonic() - started < 5, "a stop did not end the wait"
        with socket.socket() as listener:  # the UI's readiness: its port open, whatever path it serves under
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            assert _wait_listening(sleeper, "127.0.0.1", listener.getsockname()[1], 5, lambda: False)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_the_demo_says_what_its_import_warns_of_and_keeps_two_tokens_alive(tmp_path) -> None:
    """The demo printed only "imported 5000 samples" where `augloop import` of the same file warns of texts that
    span splits (to read before training); each start issued two more tokens that never expire, the annotator's
    printed first though it can neither augment nor train. A second start revokes the first's tokens."""
    import sqlite3

    env = demo_env(tmp_path, free_port(), free_port())

    def start() -> str:
        run = subprocess.run(
            [sys.executable, "-m", "augloop", "demo", "--no-serve"],
            cwd=Path(__file__).resolve().parents[1],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        return run.stdout + run.stderr

    first = start()
    assert "5 group(s) of near-duplicate texts span splits" in first, first
    lines = first.splitlines()
    assert lines.index(next(ln for ln in lines if ln.startswith("admin token"))) < lines.index(
        next(ln for ln in lines if ln.startswith("annotator token"))
    )
    assert all(ln.split()[-1].startswith("aug_") for ln in lines if ln.startswith(("admin token", "annotator token")))
    second = start()
    assert "already imported" in second, second
    with sqlite3.connect(tmp_path / "var" / "augloop.db") as db:
        states = db.execute(
            "SELECT users.name, api_tokens.revoked_at IS NULL FROM api_tokens JOIN users ON users.id = user_id"
        ).fetchall()
    assert sorted(states) == [
        ("demo-admin", 0),
        ("demo-admin", 1),
        ("demo-annotator", 0),
        ("demo-annotator", 1),
    ], states
