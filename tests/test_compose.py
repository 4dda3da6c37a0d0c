"""docker-compose.yml validated by a real compose implementation (Debian's docker-compose, offline)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import REPO_ROOT


def _compose_config(exe: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`docker-compose config` on the repository's file, with `env` and none of the shell's AUGLOOP_ variables."""
    outside = {k: v for k, v in os.environ.items() if not k.startswith("AUGLOOP_")}
    return subprocess.run(
        [exe, "-f", str(REPO_ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        env={**outside, **env},
    )


@pytest.fixture(scope="module")
def compose_config() -> dict:
    exe = shutil.which("docker-compose")
    if exe is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("docker-compose missing in CI: `make test` should have installed it")
        pytest.skip("docker-compose not installed (run `make system-deps`)")
    r = _compose_config(exe, AUGLOOP_DB_PASSWORD="from-the-env-file")
    assert r.returncode == 0, r.stderr
    return yaml.safe_load(r.stdout)


def test_the_database_password_comes_from_the_environment_not_the_file() -> None:
    text = (REPO_ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    assert "POSTGRES_PASSWORD: augloop" not in text and "augloop:augloop@" not in text
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose not installed")
    r = _compose_config(exe)
    assert r.returncode != 0 and "AUGLOOP_DB_PASSWORD" in r.stderr, "compose must refuse to start without it"


def test_services_and_their_order(compose_config):
    assert compose_config["services"]["db"]["environment"]["POSTGRES_PASSWORD"] == "from-the-env-file"
    services = compose_config["services"]
    assert set(services) == {"db", "migrate", "api", "worker", "ui"}
    assert services["db"]["image"] == "postgres:16"
    assert "pg_isready" in " ".join(services["db"]["healthcheck"]["test"])
    assert any(
        str(v).endswith("/var/lib/postgresql/data:rw") or str(v).endswith("/var/lib/postgresql/data")
        for v in services["db"]["volumes"]
    ), services["db"]["volumes"]
    assert services["migrate"]["depends_on"]["db"]["condition"] == "service_healthy"
    assert services["migrate"]["command"] == ["augloop", "migrate"]
    for name in ("api", "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["ui"]["environment"]["AUGLOOP_API_URL"] == "http://api:8000"


def test_the_api_believes_forwarded_addresses_from_the_ui_only(compose_config):
    """The UI passes on each browser's address (the sign-in limiter counts per browser); the API believes the
    header from the UI's fixed address and from nobody else."""
    import json

    services = compose_config["services"]
    ui_address = services["ui"]["networks"]["default"]["ipv4_address"]
    assert json.loads(services["api"]["environment"]["AUGLOOP_TRUSTED_PROXIES"]) == [ui_address]
    subnet = compose_config["networks"]["default"]["ipam"]["config"][0]["subnet"]
    assert ui_address.rsplit(".", 1)[0] == subnet.rsplit(".", 1)[0]


def test_the_worker_holds_every_gpu_with_a_process_pinned_to_each(compose_config):
    """Docker gives every replica of a `count: 1` reservation device 0: `--scale worker=2` put both workers on
    GPU 0. One container holds them all and `--gpus all` pins a worker process to each."""
    worker = compose_config["services"]["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}], devices
    assert worker["command"] == ["augloop", "worker", "--gpus", "all"]
    assert "container_name" not in worker and "ports" not in worker
    assert worker["environment"]["AUGLOOP_DATABASE_URL"].startswith("postgresql+psycopg://")
    # not /app, the source tree: a hub-id-shaped encoder name ("examples") would be read as a folder there
    assert worker["working_dir"] == "/srv/augloop-worker"


def test_the_workers_grace_period_outlasts_a_distributed_runs_stop(compose_config):
    """SIGTERM asks a distributed run's processes to checkpoint and stop, waits STOP_WAIT_SECONDS for them, then
    ends them (KILL_GRACE_SECONDS more) and gives the job back. A grace period of exactly 5 minutes let Docker's
    SIGKILL land at that same moment, and the job came back only when its lease ran out."""
    from services.distributed_training import KILL_GRACE_SECONDS, STOP_WAIT_SECONDS

    grace = compose_config["services"]["worker"]["stop_grace_period"]  # compose's own format: "6m0s", "360s"
    seconds = sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)([hms])", grace))
    assert seconds >= STOP_WAIT_SECONDS + KILL_GRACE_SECONDS + 30, grace


def test_the_commands_exist_in_the_cli(compose_config):
    from typer.main import get_command

    from augloop.cli import app

    commands = set(get_command(app).commands)  # type: ignore[attr-defined]
    for service in compose_config["services"].values():
        if "command" in service and service["command"][0] == "augloop":
            assert service["command"][1] in commands


def test_the_operators_env_file_stays_out_of_the_image() -> None:
    """`COPY . .` put the operator's .env (the database password) into an image layer, and the API and UI read
    that build-time copy from /app while the worker did not."""
    import fnmatch

    patterns = [
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:  # Docker's rule: the last pattern that matches decides
        verdict = False
        for pattern in patterns:
            negate = pattern.startswith("!")
            if fnmatch.fnmatch(path, pattern.lstrip("!")):
                verdict = not negate
        return verdict

    assert ignored(".env") and ignored(".env.production")
    assert not ignored(".env.example")
