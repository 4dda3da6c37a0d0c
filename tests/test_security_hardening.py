"""Hardening found by an outsider's attempt (issue 13): a sign-in limiter nobody can turn against other users,
token states and use, role changes, private files, and API docs that work offline."""

from __future__ import annotations

import os
import stat
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tests.cli_process import run_augloop
from tests.conftest import EXAMPLE_CSV


def _client(app, address: str, token: str | None = None, forwarded: str | None = None) -> TestClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if forwarded:
        headers["X-Forwarded-For"] = forwarded
    return TestClient(app, client=(address, 50000), headers=headers)


def test_wrong_tokens_typed_into_the_ui_lock_out_only_their_browser(app, settings, annotator_token) -> None:
    """All UI traffic reaches the API from the UI server's address; the UI passes on each browser's address,
    which the API believes from that address only."""
    app.state.settings = settings.model_copy(update={"trusted_proxies": ["10.0.0.5"]})
    app.state.auth_limiter.per_minute = 20
    attacker = _client(app, "10.0.0.5", "aug_wrongwrongwrong", forwarded="203.0.113.7")
    assert [attacker.get("/api/v1/me").status_code for _ in range(21)][-2:] == [401, 429]
    colleague = _client(app, "10.0.0.5", annotator_token, forwarded="198.51.100.20")
    assert colleague.get("/api/v1/me").status_code == 200, "one browser's typos locked out every UI user"


def test_forwarded_addresses_from_untrusted_peers_are_ignored(app, settings, annotator_token) -> None:
    app.state.auth_limiter.per_minute = 5
    for i in range(6):  # rotating the header buys no extra guesses
        r = _client(app, "192.0.2.9", f"aug_guess{i:03d}xxxx", forwarded=f"198.51.100.{i}").get("/api/v1/me")
    assert r.status_code == 429
    # …and cannot lock out the address it names
    victim = _client(app, "198.51.100.1", annotator_token)
    assert victim.get("/api/v1/me").status_code == 200


def test_wrong_tokens_sharing_a_tokens_public_prefix_do_not_lock_its_owner_out(app, annotator_token) -> None:
    """A token's first ten characters are shown in every token list; failures counted against them let anyone
    lock the owner out from addresses of their own. Each address is still limited."""
    app.state.auth_limiter.per_minute = 5
    guesses = [
        _client(app, f"192.0.2.{i // 6}", annotator_token[:10] + f"guess{i}").get("/api/v1/me").status_code
        for i in range(18)
    ]
    assert guesses[:5] == [401] * 5 and guesses[5] == 429, "an address's failures are not limited"
    owner = _client(app, "198.51.100.20", annotator_token)
    assert owner.get("/api/v1/me").status_code == 200, "guesses at the token's public prefix locked its owner out"


def test_the_limiters_memory_is_bounded() -> None:
    from api.deps import AuthFailureLimiter

    limiter = AuthFailureLimiter(per_minute=3, max_keys=100)
    for i in range(5000):
        limiter.record(f"client:{i}", f"token:{i}")
    assert len(limiter.failures) == 100


def test_token_states_last_use_and_expiry_bounds(admin, client, engine, annotator_token) -> None:
    from db.models import APIToken, utcnow
    from db.session import session_scope

    with session_scope(engine) as s:
        token = s.query(APIToken).filter(APIToken.prefix == annotator_token[:10]).one()
        token.expires_at = utcnow() - timedelta(days=1)
        token_id = token.id
    listed = {t["id"]: t for t in admin.get("/api/v1/tokens").json()}
    assert listed[token_id]["state"] == "expired", "an expired token was listed as active"
    me = admin.get("/api/v1/me")
    assert me.status_code == 200
    admin_id = next(t["id"] for t in listed.values() if t["name"] == "alice-admin")

    def last_used() -> str | None:
        return {t["id"]: t for t in admin.get("/api/v1/tokens").json()}[admin_id]["last_used_at"]

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and last_used() is None:
        time.sleep(0.05)
    first = last_used()
    assert first is not None, "last_used_at was never written"
    for _ in range(5):
        admin.get("/api/v1/me")
    time.sleep(0.3)
    assert last_used() == first, "written more than once a minute"
    from tests.conftest import _issue

    other = _issue(engine, "ops", "admin")  # the last admin token is not revoked over the API
    assert admin.post(f"/api/v1/tokens/{admin_id}/revoke").status_code == 200
    states = {
        t["id"]: t["state"] for t in client.get("/api/v1/tokens", headers={"Authorization": f"Bearer {other}"}).json()
    }
    assert states[admin_id] == "revoked" and states[token_id] == "expired"


def test_cli_refuses_a_negative_expiry_and_changes_roles(settings, engine) -> None:
    from augloop.cli import app

    runner = CliRunner()
    for days in ("-5", "1e-300"):  # the second expired as it was handed out
        bad = runner.invoke(app, ["token", "create", "--name", "eve", "--expires-days", days])
        assert bad.exit_code == 2 and "expires_in_days" in bad.output, bad.output
    assert runner.invoke(app, ["token", "create", "--name", "eve"]).exit_code == 0
    assert runner.invoke(app, ["user", "role", "eve", "admin"]).exit_code == 0
    listed = runner.invoke(app, ["token", "list"], env={"COLUMNS": "200"})
    assert "eve" in listed.output and "admin" in listed.output
    assert runner.invoke(app, ["user", "role", "nobody", "admin"]).exit_code == 2
    # `system` is the automatic reviewer's alone: no person gets it, and its role does not change.
    system = runner.invoke(app, ["user", "role", "eve", "system"])
    assert system.exit_code == 2 and "role must be one of annotator, admin" in system.output
    from db.auth import automatic_reviewer
    from db.session import session_scope

    with session_scope(engine) as s:
        auto = automatic_reviewer(s).name
    assert runner.invoke(app, ["user", "role", auto, "admin"]).exit_code == 2


def test_admins_change_a_users_role_over_the_api(admin, annotator, annotator_token) -> None:
    assert annotator.get("/api/v1/tokens").status_code == 403
    r = admin.patch("/api/v1/users/bob-annotator", json={"role": "admin"})
    assert r.status_code == 200 and r.json()["role"] == "admin"
    assert annotator.get("/api/v1/tokens").status_code == 200, "the role change did not take effect"
    assert admin.patch("/api/v1/users/nobody", json={"role": "admin"}).status_code == 404


def test_the_last_admin_with_a_token_stays_one_over_the_api(settings, engine, admin) -> None:
    """The only admin demoted themselves (or revoked their own token) in one request, and nobody could manage
    tokens, projects or imports over the API or the UI again (an attacker's find): 409 naming the field, and
    nothing changed. With another admin holding an active token both go through; the operator's CLI always."""
    from augloop.cli import app
    from db.auth import create_token
    from db.models import utcnow
    from db.session import session_scope
    from tests.conftest import _issue

    me = next(t for t in admin.get("/api/v1/tokens").json() if t["name"] == "alice-admin")
    demoted = admin.patch("/api/v1/users/alice-admin", json={"role": "annotator"})
    assert demoted.status_code == 409 and demoted.json()["field"] == "role", demoted.text
    revoked = admin.post(f"/api/v1/tokens/{me['id']}/revoke")
    assert revoked.status_code == 409 and revoked.json()["field"] == "token_id", revoked.text
    assert admin.get("/api/v1/me").json()["role"] == "admin"  # both refused whole: still an admin, still signed in
    with session_scope(engine) as s:  # an admin whose only token has expired counts for nothing
        create_token(s, "dora-admin", "admin", utcnow() - timedelta(seconds=1))
    assert admin.patch("/api/v1/users/alice-admin", json={"role": "annotator"}).status_code == 409
    _issue(engine, "carl-admin", "admin")
    assert admin.post(f"/api/v1/tokens/{me['id']}/revoke").json() == {"revoked": 1}
    # the operator at the command line may leave none (and make one again)
    assert CliRunner().invoke(app, ["user", "role", "carl-admin", "annotator"]).exit_code == 0


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_everything_under_the_data_directory_is_private(tmp_path) -> None:
    data = tmp_path / "data"
    env = {**os.environ, "AUGLOOP_DATA_DIR": str(data), "AUGLOOP_DATABASE_URL": f"sqlite:///{data}/augloop.db"}
    old = os.umask(0o022)  # a permissive shell
    try:
        for args in (
            ["import", str(EXAMPLE_CSV), "--dataset", "psm", "--task", "bias"],
            ["export", "psm", "-o", str(data / "exports" / "psm.csv")],
        ):
            r = run_augloop(*args, env=env)
            assert r.returncode == 0, r.stderr
    finally:
        os.umask(old)
    assert _mode(data) == 0o700
    assert _mode(data / "augloop.db") == 0o600
    assert _mode(data / "exports") == 0o700 and _mode(data / "exports" / "psm.csv") == 0o600
    wal = data / "augloop.db-wal"
    if wal.exists():
        assert _mode(wal) == 0o600


def test_api_docs_work_without_internet(client) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assert "cdn.jsdelivr" not in page.text and "unpkg" not in page.text
    assert "/docs-assets/swagger-ui-bundle.js" in page.text
    assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    assert client.get("/docs-assets/swagger-ui.css").status_code == 200


@pytest.mark.parametrize("path", ["/docs", "/openapi.json"])
def test_docs_are_public_but_hold_no_data(client, path) -> None:
    """SECURITY.md says so: the schema describes the API; every route that returns data needs a token."""
    assert client.get(path).status_code == 200
    assert client.get("/api/v1/datasets").status_code == 401


def test_cli_outputs_that_go_nowhere_store_nothing_and_say_so(settings, engine, example_dataset, tmp_path) -> None:
    """Attackers' finds at the command line: `token create` whose output went nowhere (stdout closed, a full
    disk) stored an active admin token nobody held; `export -o -` with stdout closed and `-o` through a link
    that points at itself ended in tracebacks; `wait` (tests/test_augment_cli.py) is the fourth."""
    import subprocess
    import sys as _sys

    from tests.cli_process import REPO_ROOT, cli_env

    env = cli_env(settings)

    def augloop_to(stdout: Any, *args: str) -> subprocess.CompletedProcess[str]:
        """The CLI with its standard output sent to `stdout` (None: started with descriptor 1 closed)."""
        return subprocess.run(
            [_sys.executable, "-m", "augloop", *args],
            cwd=REPO_ROOT,
            env=env,
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            check=False,
            preexec_fn=(lambda: os.close(1)) if stdout is None else None,
        )

    def augloop_closed_stdout(*args: str) -> subprocess.CompletedProcess[str]:
        return augloop_to(None, *args)

    closed = augloop_closed_stdout("token", "create", "--name", "lost1", "--role", "admin")
    assert closed.returncode == 2 and "standard output is closed" in closed.stderr, closed.stderr
    with open("/dev/full", "w") as full:
        r = augloop_to(full, "token", "create", "--name", "lost2", "--role", "admin")
    assert r.returncode == 2, r.stderr
    listed = run_augloop("token", "list", env={**env, "COLUMNS": "200"})
    assert "lost1" not in listed.stdout and "lost2" not in listed.stdout, listed.stdout
    exported = augloop_closed_stdout("export", example_dataset, "-o", "-")
    assert exported.returncode == 2 and "standard output is closed" in exported.stderr, exported.stderr
    loop = tmp_path / "loop.csv"
    loop.symlink_to(loop)
    looped = run_augloop("export", example_dataset, "-o", str(loop), env=env)
    assert looped.returncode == 2 and "Traceback" not in looped.stderr and "cannot be followed" in looped.stderr
    dangling = tmp_path / "dangling.csv"
    dangling.symlink_to(tmp_path / "nowhere" / "x.csv")
    said = run_augloop("export", example_dataset, "-o", str(dangling), env=env)
    assert said.returncode == 2 and f"{tmp_path / 'nowhere'} is not a directory" in said.stderr, said.stderr
