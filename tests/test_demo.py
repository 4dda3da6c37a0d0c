"""`augloop demo` as `make demo` runs it: imports the example, serves API + worker + UI, and Ctrl-C stops all."""

from __future__ import annotations

import os
import signal
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


@pytest.mark.slow
def test_demo_serves_the_loop_and_ctrl_c_stops_everything(tmp_path):
    api_port, ui_port = free_port(), free_port()
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
    demo = subprocess.Popen(
        [sys.executable, "-m", "augloop", "demo"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
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
        token = next(ln.split()[-1] for ln in lines if ln.startswith("annotator token:"))
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
        if demo.poll() is None:
            demo.kill()
