"""The `augloop` command as a user runs it: a real subprocess against a fresh database URL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli_process import REPO_ROOT, cli_env, run_augloop
from tests.conftest import EXAMPLE_CSV


def augloop(settings, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
    return run_augloop(*args, env=cli_env(settings), input=input)


def test_help_lists_the_subcommands(settings):
    out = augloop(settings, "--help").stdout
    for command in ("import", "stats", "export", "token", "serve", "worker", "ui", "demo"):
        assert command in out
    # options whose default comes from a setting say which, and what it is by default (they showed none)
    serve = " ".join(augloop(settings, "serve", "--help").stdout.split())
    assert "AUGLOOP_API_HOST, 127.0.0.1" in serve and "AUGLOOP_API_PORT, 8000" in serve, serve


def test_every_command_works_against_a_fresh_database_url(tmp_path, settings):
    fresh = settings.model_copy(update={"database_url": f"sqlite:///{tmp_path / 'brand-new' / 'x.db'}"})
    r = augloop(fresh, "token", "create", "--name", "ops", "--role", "admin")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().startswith("aug_") and len(r.stdout.strip()) > 40


def test_import_stats_export_round_trip(settings, tmp_path):
    r = augloop(
        settings,
        "import",
        str(EXAMPLE_CSV),
        "--dataset",
        "political_social_media",
        "--task",
        "bias",
        "--task",
        "message",
        "--task",
        "audience",
    )
    assert r.returncode == 0, r.stderr
    assert "imported 5000 samples" in r.stdout and "(from column 'split')" in r.stdout
    stats = augloop(settings, "stats", "political_social_media")
    assert stats.returncode == 0
    assert "task message" in stats.stdout and "mobilization" in stats.stdout and "11.4×" in stats.stdout
    out = tmp_path / "export.jsonl"
    r = augloop(settings, "export", "political_social_media", "-o", str(out), "--format", "jsonl")
    assert r.returncode == 0 and len(out.read_text().splitlines()) == 5000
    piped = augloop(settings, "export", "political_social_media", "-o", "-", "--format", "jsonl")  # for a pipe
    assert piped.returncode == 0 and "wrote 5000 rows to standard output" in piped.stderr, piped.stderr
    assert piped.stdout == out.read_text() and not (tmp_path / "-").exists()
    # "./-" names a file called "-" (a Path read it as "-": the rows went to standard output)
    named = subprocess.run(
        [sys.executable, "-m", "augloop", "export", "political_social_media", "-o", "./-", "--format", "jsonl"],
        cwd=tmp_path,
        env=cli_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert named.returncode == 0 and not named.stdout.startswith("{"), named.stdout[:200]
    assert (tmp_path / "-").read_text() == out.read_text()
    (tmp_path / "-").unlink()
    # a reader that stops early (`| head`): a quiet stop with SIGPIPE's code, not "error: Broken pipe" and code 2
    reader = subprocess.Popen(
        [sys.executable, "-m", "augloop", "export", "political_social_media", "-o", "-"],
        cwd=REPO_ROOT,
        env=cli_env(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert reader.stdout is not None and reader.stderr is not None
    reader.stdout.read(10)
    reader.stdout.close()
    assert reader.wait(timeout=120) == 141 and b"error" not in reader.stderr.read()
    # a new export is private (SECURITY.md); one replacing a team's file keeps its permission bits
    assert out.stat().st_mode & 0o777 == 0o600
    out.chmod(0o644)
    r = augloop(settings, "export", "political_social_media", "-o", str(out), "--format", "jsonl")
    assert r.returncode == 0 and out.stat().st_mode & 0o777 == 0o644
    r = augloop(settings, "export", "political_social_media", "-o", str(tmp_path / "x.tsv"))
    assert r.returncode == 2 and "names a tab-separated file" in r.stderr and not (tmp_path / "x.tsv").exists()
    r = augloop(settings, "export", "political_social_media", "-o", str(tmp_path / "x.xlsx"))
    assert r.returncode == 2 and "names an Excel file" in r.stderr, r.stderr  # it read "names a Excel file"
    typo = tmp_path / "exprots" / "train.csv"
    r = augloop(settings, "export", "political_social_media", "-o", str(typo))
    assert r.returncode == 2 and "is not a directory" in r.stderr and not typo.parent.exists()
    # a deletion (one transaction, half a minute for 300,000 samples, silent) shows a spinner and its time on a
    # terminal: the deletion slowed here, the terminal's answers forced (rich's TTY_* variables)
    slow_delete = (
        "import time, services.datasets as d; real = d.remove\n"
        "d.remove = lambda *a, **k: (time.sleep(1), real(*a, **k))[1]\n"
        "import sys; sys.argv = ['augloop', 'delete', 'political_social_media', '--yes']\n"
        "from augloop.cli import main; main()\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", slow_delete],
        cwd=REPO_ROOT,
        env=cli_env(settings, TTY_COMPATIBLE="1", TTY_INTERACTIVE="1"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0 and "deleted political_social_media (5,000 samples)" in r.stdout, r.stderr
    assert "deleting political_social_media (5,000 samples)" in r.stderr and "0:00:0" in r.stderr, r.stderr


def test_bad_input_exits_2_with_a_message(settings, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"text,label\nfine,a\n,b\n")
    r = augloop(settings, "import", str(bad), "--dataset", "d", "--task", "label")
    assert r.returncode == 2 and "line 3: missing text" in r.stderr
    r = augloop(settings, "import", str(bad), "--dataset", "d", "--task", "label", "--split", "holdout")
    assert r.returncode == 2 and "split: 'holdout' is no split" in r.stderr
    dev = tmp_path / "dev.csv"
    dev.write_bytes(b"text,label\nfine,a\nnot fine,b\n")
    r = augloop(settings, "import", str(dev), "--dataset", "d", "--task", "label", "--split", "dev")
    assert r.returncode == 0 and "splits {'val': 2} (every row: val)" in r.stdout, r.stderr
    r = augloop(settings, "stats", "does-not-exist")
    assert r.returncode == 2 and "not found" in r.stderr
    r = augloop(settings, "import", str(tmp_path / "missing.csv"), "--dataset", "d", "--task", "label")
    assert r.returncode == 2 and "file not found" in r.stderr
    r = augloop(settings, "token", "create", "--name", "x", "--role", "god")
    assert r.returncode == 2 and "role must be one of" in r.stderr
    r = augloop(settings, "import", str(tmp_path), "--dataset", "d", "--task", "label")
    assert r.returncode == 2 and "is a directory" in r.stderr
    # What the operating system refuses (a name too long) is a message too, not a traceback
    r = augloop(settings, "import", str(tmp_path / ("x" * 300 + ".csv")), "--dataset", "d", "--task", "label")
    assert r.returncode == 2 and "File name too long" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_token_list_and_revoke(settings):
    token = augloop(settings, "token", "create", "--name", "ann").stdout.strip()
    listing = augloop(settings, "token", "list").stdout
    assert "ann" in listing and token not in listing and "active" in listing
    assert "revoked 1 token" in augloop(settings, "token", "revoke", "--user", "ann").stdout
    assert "revoked" in augloop(settings, "token", "list").stdout


def test_migrations_match_the_models(settings):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from db.migrate import comparison_hooks
    from db.models import Base
    from db.session import get_engine

    with get_engine(settings.resolved_database_url).connect() as conn:
        assert (
            compare_metadata(MigrationContext.configure(conn, opts=comparison_hooks(conn.dialect.name)), Base.metadata)
            == []
        )


def test_sqlite_runs_in_wal_mode_with_foreign_keys(engine):
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() > 0


def test_export_reports_rows_written_of_the_total_for_the_progress_bar(engine, example_dataset, tmp_path):
    """`augloop export` of a large dataset takes a while: the export says how far it is, rows written of the
    view's total, as it writes (the CLI draws its bar from it)."""
    from db.session import session_scope
    from services.datasets import export_to

    seen: list[tuple[int, int]] = []
    with session_scope(engine) as session:
        rows = export_to(
            session, example_dataset, "csv", "original", tmp_path / "out.csv", progress=lambda d, t: seen.append((d, t))
        )
    assert rows.rows == 5000 and len((tmp_path / "out.csv").read_text().splitlines()) == 5001
    assert seen[0] == (0, 5000) and seen[-1] == (5000, 5000) and len(seen) >= 10
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_an_export_removes_the_part_a_killed_export_of_the_same_file_left(engine, example_dataset, tmp_path):
    """`augloop export -o FILE` killed mid-write left FILE.<random>.part, a copy of the dataset so far, for
    good. The next export to FILE removes such parts once untouched for an hour; a fresh one (another process
    writing FILE now) and other files stay."""
    import os
    import time

    from db.session import session_scope
    from services.datasets import export_to

    out = tmp_path / "out"
    out.mkdir()
    target = out / "train.csv"
    stale, fresh = out / "train.csv.0123456789ab.part", out / "train.csv.ba9876543210.part"
    other, near = out / "other.csv.0123456789ab.part", out / "train.csv.notours.part"
    for path in (stale, fresh, other, near):
        path.write_text("text,bias\n")
    hour_ago = time.time() - 3700
    for path in (stale, other, near):
        os.utime(path, (hour_ago, hour_ago))
    with session_scope(engine) as session:
        export_to(session, example_dataset, "csv", "original", target)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in (target, fresh, other, near))


def test_export_writes_through_a_link_and_refuses_a_pipe_it_would_replace(engine, example_dataset, tmp_path):
    """The export is renamed into place: over a link it replaced the link (its file unchanged), over a pipe or a
    device the node itself (as root, /dev/full)."""
    import os

    import pytest

    from core.errors import ValidationFailed
    from db.session import session_scope
    from services.datasets import export_to

    out = tmp_path / "out"
    out.mkdir()
    target, link, pipe = out / "target.csv", out / "link.csv", out / "pipe.csv"
    target.write_text("old")
    link.symlink_to(target)
    os.mkfifo(pipe)
    with session_scope(engine) as session:
        export_to(session, example_dataset, "csv", "original", link)
        with pytest.raises(ValidationFailed, match="not a regular file") as err:
            export_to(session, example_dataset, "csv", "original", pipe)
    assert link.is_symlink() and len(target.read_text().splitlines()) == 5001
    assert err.value.field == "output" and pipe.is_fifo()
    assert sorted(p.name for p in out.iterdir()) == ["link.csv", "pipe.csv", "target.csv"]
    # a pipe through /proc (`-o /dev/stdout | cat`): its link resolves to "pipe:[N]", a name that exists nowhere,
    # and the export failed on "No such file or directory (/proc/N/fd/pipe:[M].….part)"
    read_end, write_end = os.pipe()
    try:
        with session_scope(engine) as session, pytest.raises(ValidationFailed, match="-o - for the standard output"):
            export_to(session, example_dataset, "csv", "original", Path(f"/proc/self/fd/{write_end}"))
    finally:
        os.close(read_end)
        os.close(write_end)


def test_import_warns_of_a_new_text_near_one_on_the_other_side_of_the_split(settings, tmp_path):
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    farm = "Senator Smith voted against the farm bill today, a shameful day for rural families everywhere"
    first.write_text(f'text,label,split\n"{farm}",a,test\n"an unrelated post about schools",b,train\n')
    second.write_text(f'text,label\n"RT @farmer: {farm}",a\n')
    for path in (first, second):
        r = augloop(settings, "import", str(path), "--dataset", "d", "--task", "label")
        assert r.returncode == 0, r.stderr
    assert "1 new text(s) near a text the dataset holds" in r.stderr
    assert "line 2 (train) near test sample 1; moved to test" in r.stderr


@pytest.mark.slow
def test_sigterm_stops_an_export_as_ctrl_c_does_leaving_no_file(settings, engine, tmp_path):
    """`timeout`, `kill` or a closed terminal (SIGTERM, SIGHUP) killed the command where it stood: each
    interrupted export left its temporary file of the dataset's texts behind. They now stop it as Ctrl-C does."""
    import signal
    import sys
    import time

    from services.importing import ImportSpec, import_path
    from tests.cli_process import REPO_ROOT
    from tests.test_import_streaming import write_csv

    import_path(engine, write_csv(tmp_path / "f.csv", 100_000), ImportSpec(dataset="big", tasks=["bias"]))
    out = tmp_path / "out"
    out.mkdir()
    export = subprocess.Popen(
        [sys.executable, "-m", "augloop", "export", "big", "-o", str(out / "big.csv")],
        cwd=REPO_ROOT,
        env=cli_env(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not list(out.glob("*.part")) and time.monotonic() < deadline and export.poll() is None:
        time.sleep(0.01)
    assert list(out.glob("*.part")), "the export never started writing"
    export.send_signal(signal.SIGTERM)
    _, stderr = export.communicate(timeout=60)
    assert export.returncode == 128 + signal.SIGTERM and "stopped by SIGTERM" in stderr, stderr
    assert "Traceback" not in stderr and list(out.iterdir()) == []


def test_settings_and_options_out_of_bounds_stop_at_once_naming_them(settings):
    """AUGLOOP_JOB_LEASE_SECONDS=nan left a worker failing its claim every second, forever, even with --burst;
    a port of 99999 failed deep in the server with a traceback."""
    r = run_augloop("worker", "--burst", env=cli_env(settings, AUGLOOP_JOB_LEASE_SECONDS="nan"), timeout=60)
    assert r.returncode == 2 and "AUGLOOP_JOB_LEASE_SECONDS" in r.stderr and "finite" in r.stderr, r.stderr
    r = run_augloop("stats", "x", env=cli_env(settings, AUGLOOP_API_PORT="99999"), timeout=60)
    assert r.returncode == 2 and "AUGLOOP_API_PORT" in r.stderr, r.stderr
    for args in (["worker", "--burst", "--lease-seconds", "nan"], ["serve", "--port", "99999"], ["ui", "--port", "-1"]):
        r = augloop(settings, *args)
        assert r.returncode == 2 and "Invalid value" in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
    # NaN is named as NaN (click's range said `--poll nan` should be at most 3600)
    for args in (["worker", "--burst", "--lease-seconds", "nan"], ["report", "impact", "x", "--poll", "nan"]):
        r = augloop(settings, *args)
        assert r.returncode == 2 and "not NaN" in r.stderr, (args, r.stderr)
    r = augloop(settings, "report", "impact", "x", "--poll", "inf")
    assert r.returncode == 2 and "must be from 0.05 to 3600" in " ".join(r.stderr.split()), r.stderr


def test_every_setting_is_named_in_the_readme() -> None:
    """An operator reads the README's settings to deploy: a setting only the code names (the SQLite busy timeout,
    the API's port, the retry backoff were) can only be found by reading the code."""
    from pathlib import Path

    from core.settings import Settings

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    missing = [f"AUGLOOP_{name.upper()}" for name in Settings.model_fields if f"`AUGLOOP_{name.upper()}`" not in readme]
    assert not missing, f"settings the README does not name: {missing}"


def test_every_api_route_is_in_the_readmes_table(settings) -> None:
    """An ML engineer looks up a route in the README: the projects, tokens and export-job routes were in none."""
    import re
    from pathlib import Path

    from api.main import create_app

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    table = readme.split("<summary>Routes</summary>", 1)[1].split("</details>", 1)[0]
    listed = set(re.findall(r"^\| `([A-Z]+ /[^`]*)` \|", table, flags=re.M))
    routes = {
        f"{method.upper()} {path.removeprefix('/api/v1')}"
        for path, operations in create_app(settings).openapi()["paths"].items()
        for method in operations
    }
    assert routes - listed == set(), "routes the README's table lacks"
    assert listed - routes == set(), "routes the README's table names that do not exist"


def test_every_admin_only_route_says_so_at_docs() -> None:
    """/docs named no role on the admin-only routes (import, tokens, projects, workers): an ML engineer found out
    by a 403. A route that takes an `AdminUser` says "admins" in its text."""
    import importlib
    import inspect
    import pkgutil

    import api.routes

    silent = []
    for info in pkgutil.iter_modules(api.routes.__path__):
        module = importlib.import_module(f"api.routes.{info.name}")
        for name, fn in inspect.getmembers(module, inspect.isfunction):
            if fn.__module__ != module.__name__:
                continue
            takes_admin = any("AdminUser" in str(p.annotation) for p in inspect.signature(fn).parameters.values())
            if takes_admin and "admins" not in (fn.__doc__ or ""):
                silent.append(f"{info.name}.{name}")
    assert silent == [], f"admin-only routes whose docs name no role: {silent}"


def test_an_export_never_replaces_augloops_own_files(settings, engine, example_dataset) -> None:
    """`augloop export -o var/augloop.db` turned the database into a CSV and exited 0 (every dataset, review and
    token lost); a run's model or a queued upload inside the data directory went the same way."""
    from pathlib import Path

    from sqlalchemy import func, select
    from sqlalchemy.engine import make_url
    from typer.testing import CliRunner

    from augloop.cli import app
    from db.models import Sample
    from db.session import session_scope

    database = Path(make_url(settings.resolved_database_url).database or "")
    assert database.is_file()
    before = database.read_bytes()[:16]
    model = settings.data_dir / "runs" / "7" / "model" / "heads.safetensors"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"weights")
    # an export job's name under exports/ is the job's: the workers' sweep deletes it with its job
    job_file = settings.data_dir / "exports" / "job7.csv"
    for target in (database, Path(f"{database}-wal"), model, job_file):
        result = CliRunner().invoke(app, ["export", example_dataset, "--output", str(target)])
        assert result.exit_code == 2, (target, result.output)
    assert not job_file.exists()
    assert database.read_bytes()[:16] == before == b"SQLite format 3\x00" and model.read_bytes() == b"weights"
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(Sample)) == 5000
    ok = settings.data_dir / "exports" / "mine.csv"
    result = CliRunner().invoke(app, ["export", example_dataset, "--output", str(ok)])
    assert result.exit_code == 0 and ok.is_file(), result.output


def test_numbers_past_the_database_and_bad_database_urls_exit_2_with_a_message(settings, engine, monkeypatch) -> None:
    """An id of 20 digits raised OverflowError from SQLite's driver, a malformed AUGLOOP_DATABASE_URL a
    SQLAlchemy traceback (exit 1); `token revoke 2 --user ann` revoked token 2 whoever's it was."""
    from typer.testing import CliRunner

    from augloop.cli import app
    from core.settings import get_settings

    runner = CliRunner()
    for args in (["runs", "show", "9" * 23], ["token", "revoke", "9" * 23], ["token", "revoke", "1", "--user", "a"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and "Traceback" not in result.output, (args, result.output)
    assert "not both" in runner.invoke(app, ["token", "revoke", "1", "--user", "a"]).output
    monkeypatch.setenv("AUGLOOP_DATABASE_URL", "notadb:///x")
    get_settings.cache_clear()
    result = runner.invoke(app, ["stats", "anything"])
    assert result.exit_code == 2 and "AUGLOOP_DATABASE_URL" in result.output, result.output


def test_an_export_writes_the_format_its_file_name_says(settings, engine, example_dataset, tmp_path) -> None:
    """`augloop export -o x.jsonl` wrote CSV into it: the format now follows the name unless asked for, and a
    name that says another format than the one asked for is refused."""
    import json

    from typer.testing import CliRunner

    from augloop.cli import app

    out = tmp_path / "psm.jsonl"
    result = CliRunner().invoke(app, ["export", example_dataset, "-o", str(out)])
    assert result.exit_code == 0, result.output
    first = json.loads(out.read_text(encoding="utf-8").splitlines()[0])
    assert first["text"] and first["split"] in ("train", "val", "test")
    refused = CliRunner().invoke(app, ["export", example_dataset, "-o", str(tmp_path / "x.jsonl"), "--format", "csv"])
    assert refused.exit_code == 2 and "names a JSONL file" in refused.output, refused.output
    assert not (tmp_path / "x.jsonl").exists()
    plain_csv = tmp_path / "psm.txt"
    assert CliRunner().invoke(app, ["export", example_dataset, "-o", str(plain_csv)]).exit_code == 0
    assert plain_csv.read_text(encoding="utf-8").startswith("id,external_id,text")


def test_delete_removes_a_dataset_and_its_files_once_confirmed(settings, engine, example_dataset) -> None:
    """Deleting needed the API, a running server and an admin token: the CLI had no way to undo an import."""
    from sqlalchemy import func, select
    from typer.testing import CliRunner

    from augloop.cli import app
    from db.models import Dataset, Sample
    from db.session import session_scope

    exported = settings.data_dir / "exports" / "mine.csv"  # a file of the operator's: not the dataset's
    assert CliRunner().invoke(app, ["export", example_dataset, "-o", str(exported)]).exit_code == 0
    asked = CliRunner().invoke(app, ["delete", example_dataset])  # no terminal to ask on
    assert asked.exit_code == 2 and "pass --yes" in asked.output and "5,000 samples" in asked.output
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(Sample)) == 5000
    done = CliRunner().invoke(app, ["delete", example_dataset, "--yes"])
    assert done.exit_code == 0 and "deleted psm (5,000 samples)" in done.output, done.output
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(Dataset)) == 0
        assert s.scalar(select(func.count()).select_from(Sample)) == 0
    assert exported.exists()
    missing = CliRunner().invoke(app, ["delete", "nope", "--yes"])
    assert missing.exit_code == 2 and "not found" in missing.output


def test_an_operators_bad_settings_exit_2_naming_the_setting(settings) -> None:
    """An empty `AUGLOOP_API_HOST=` line of a .env opened the API on every interface; a list setting that is not
    JSON, an in-memory database (an import "succeeded" and was gone), a lease of 1e23 (a worker failing its claim
    every second) and a busy timeout SQLite reads as 0 each ran, or ended in a traceback."""
    for variable, value, said in (
        ("AUGLOOP_API_HOST", "", "AUGLOOP_API_HOST: an address to listen on"),
        ("AUGLOOP_UI_HOST", " ", "AUGLOOP_UI_HOST: an address to listen on"),
        ("AUGLOOP_CORS_ORIGINS", "http://x", "AUGLOOP_CORS_ORIGINS: not a JSON list"),
        ("AUGLOOP_DATABASE_URL", "sqlite://", "AUGLOOP_DATABASE_URL: an in-memory SQLite database is lost"),
        # a URI names memory too (a token "created" there was gone for the next command: an attacker's find)
        (
            "AUGLOOP_DATABASE_URL",
            "sqlite:///file::memory:?cache=shared&uri=true",
            "AUGLOOP_DATABASE_URL: an in-memory SQLite database is lost",
        ),
        # a port that is no number (a password holding ':' or '@' unescaped): a traceback, exit 1
        ("AUGLOOP_DATABASE_URL", "postgresql+psycopg://u:p@h:x/y", "AUGLOOP_DATABASE_URL: not a database URL"),
        # integers with no upper bound reached SQL: "Python int too large to convert to SQLite INTEGER", a 422
        ("AUGLOOP_JOB_MAX_ATTEMPTS", "99999999999999999999", "AUGLOOP_JOB_MAX_ATTEMPTS: Input should be less"),
        ("AUGLOOP_REVIEW_COUNT_AHEAD", "99999999999999999999", "AUGLOOP_REVIEW_COUNT_AHEAD: Input should be less"),
        ("AUGLOOP_JOB_LEASE_SECONDS", "1e23", "AUGLOOP_JOB_LEASE_SECONDS: Input should be less than or equal to"),
        ("AUGLOOP_SQLITE_BUSY_TIMEOUT_MS", "9999999999999", "AUGLOOP_SQLITE_BUSY_TIMEOUT_MS"),
        ("AUGLOOP_AUGMENT_DEVICE", "gpu", "AUGLOOP_AUGMENT_DEVICE: cpu, cuda, cuda:N, mps or xpu"),
        ("AUGLOOP_DATA_DIR", "/etc/hostname", "AUGLOOP_DATA_DIR: /etc/hostname is not a directory"),  # "File exists"
        # a directory: SQLite's "unable to open database file" read as an outage ("the database did not answer")
        (
            "AUGLOOP_DATABASE_URL",
            f"sqlite:///{settings.data_dir}",
            f"AUGLOOP_DATABASE_URL: {settings.data_dir} is a directory; name a database file in it",
        ),
    ):
        r = run_augloop("migrate", env=cli_env(settings, **{variable: value}), timeout=60)
        assert r.returncode == 2 and said in " ".join(r.stderr.split()), (variable, r.stderr)
        assert "Traceback" not in r.stderr


def test_every_integer_setting_is_bounded_above() -> None:
    """The README: every number is bounded and finite. Integer settings with no maximum took 10**20, which the
    first SQL statement holding them refused (a job's attempts, an export pruning's count, a LIMIT)."""
    from core.settings import Settings

    unbounded = [
        name
        for name, field in Settings.model_fields.items()
        if field.annotation in (int, int | None)
        and not any(hasattr(m, "le") or hasattr(m, "lt") for m in field.metadata)
    ]
    assert not unbounded, unbounded


def test_a_data_directory_where_no_file_can_be_created_exits_2_at_once(settings) -> None:
    """AUGLOOP_DATA_DIR=/proc/self: the migration lock's library retried creating its lock file for ever, and every
    command hung (an attacker's find); the operating system's refusal is said, naming the file."""
    env = cli_env(settings, AUGLOOP_DATA_DIR="/proc/self")
    env.pop("AUGLOOP_DATABASE_URL")  # the database goes in the data directory
    r = run_augloop("stats", "x", env=env, timeout=60)
    assert r.returncode == 2 and "migrate-lock" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_a_database_augloop_must_not_use_exits_2_and_is_left_as_it_was(tmp_path) -> None:
    """A file that is no database, a newer augloop's database and another application's database ended in a
    traceback (the worker first retried the first for a minute), or got augloop's tables added beside theirs."""
    import os
    import sqlite3

    def run(path, *args: str) -> subprocess.CompletedProcess:
        env = {
            **os.environ,
            "AUGLOOP_DATABASE_URL": f"sqlite:///{path}",
            "AUGLOOP_DATA_DIR": str(tmp_path),
            "COLUMNS": "300",
        }
        return run_augloop(*args, env=env, timeout=60)

    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(bytes(range(256)) * 32)
    for args in (("migrate",), ("worker", "--burst")):
        r = run(garbage, *args)
        assert r.returncode == 2 and "cannot be read: file is not a database" in " ".join(r.stderr.split()), r.stderr
    # refused before the migration's lock file was made beside it (an empty `<db>.migrate-lock` was left)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["garbage.db"]
    # shorter than SQLite's 100-byte header: SQLite took these for empty databases and wrote over them
    for name, content in (("note.db", b"x"), ("short.csv", b"id,text\n1,hi\n")):
        short = tmp_path / name
        short.write_bytes(content)
        r = run(short, "stats", "x")
        said = " ".join(r.stderr.split())
        assert r.returncode == 2 and f"cannot be read: file is not a database: {short} does not begin" in said, said
        assert short.read_bytes() == content
        assert not (tmp_path / f"{name}.migrate-lock").exists()
    # an empty file is a new database, as SQLite takes it
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    assert run(empty, "migrate").returncode == 0
    assert empty.read_bytes().startswith(b"SQLite format 3\x00")
    # the default database's path a directory: said so, not "the database did not answer"
    (tmp_path / "data" / "augloop.db").mkdir(parents=True)
    env = {**os.environ, "AUGLOOP_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "300"}
    env.pop("AUGLOOP_DATABASE_URL", None)
    r = run_augloop("stats", "x", env=env, timeout=60)
    said = " ".join(r.stderr.split())
    assert r.returncode == 2 and f"{tmp_path / 'data' / 'augloop.db'} is a directory, not a database file" in said, said
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["augloop.db"]
    newer = tmp_path / "newer.db"
    assert run(newer, "migrate").returncode == 0
    with sqlite3.connect(newer) as db:
        db.execute("UPDATE alembic_version SET version_num = '9999_future'")
    r = run(newer, "stats", "x")
    assert r.returncode == 2 and "at schema revision '9999_future', which this augloop does not know" in " ".join(
        r.stderr.split()
    )
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE foo (x)")
    r = run(other, "migrate")
    assert r.returncode == 2 and "holds another application's tables (foo)" in " ".join(r.stderr.split())
    with sqlite3.connect(other) as db:
        assert [name for (name,) in db.execute("SELECT name FROM sqlite_master")] == ["foo"]


def test_a_settings_file_that_is_not_utf8_and_a_missing_plugin_are_named(tmp_path, monkeypatch) -> None:
    from core.errors import ValidationFailed
    from core.settings import Settings, get_settings
    from workers.registry import load_handlers

    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_bytes(b"# caf\xe9\nAUGLOOP_API_PORT=8001\n")
    get_settings.cache_clear()
    try:
        with pytest.raises(ValidationFailed, match=r"\.env is not UTF-8 text \(byte 0xe9 at offset 5\)"):
            get_settings()
    finally:
        get_settings.cache_clear()
    with pytest.raises(ValueError, match="AUGLOOP_WORKER_PLUGINS: cannot import 'nonexistent_mod'"):
        load_handlers(["nonexistent_mod"])
    assert Settings(_env_file=None, database_url="sqlite:////tmp/x.db", augment_device="cuda:1").augment_device
    # values torch takes, as it spells them; an empty models or NLTK directory is the default, not "."
    kept = Settings(_env_file=None, augment_dtype="BFloat16", augment_device="xpu:0", models_dir="", nltk_data=" ")
    assert (kept.augment_dtype, kept.models_dir, kept.nltk_data) == ("bfloat16", None, None)
    with pytest.raises(ValueError, match=r"write \. for the current one"):
        Settings(_env_file=None, data_dir="")  # an empty AUGLOOP_DATA_DIR= meant wherever a command started


def test_a_misspelt_variable_is_named_with_the_setting_it_resembles(monkeypatch, caplog) -> None:
    """AUGLOOP_DATABASE_ULR was ignored in silence: the command ran on the default database."""
    import logging

    from core.settings import get_settings, unknown_variables

    assert unknown_variables(
        {"AUGLOOP_DATABASE_ULR": "x", "AUGLOOP_CPU_BF16": "1", "AUGLOOP_NOTHING_LIKE": "", "AUGLOOP_api_port": "1"}
    ) == [
        "AUGLOOP_DATABASE_ULR is not an augloop setting (did you mean AUGLOOP_DATABASE_URL?)",
        "AUGLOOP_NOTHING_LIKE is not an augloop setting",
    ]
    monkeypatch.setenv("AUGLOOP_API_PROT", "9000")
    get_settings.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="augloop.settings"):
            get_settings()
    finally:
        get_settings.cache_clear()
    assert "AUGLOOP_API_PROT is not an augloop setting (did you mean AUGLOOP_API_PORT?)" in caplog.text


def test_serve_and_ui_on_a_port_in_use_exit_2_naming_the_settings(settings) -> None:
    """uvicorn exited 3 without naming the setting; Streamlit (in the CLI's place) ended in a traceback."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for command, names in (("serve", "AUGLOOP_API_HOST/AUGLOOP_API_PORT"), ("ui", "AUGLOOP_UI_HOST")):
            r = run_augloop(command, "--port", str(port), env=cli_env(settings), timeout=60)
            said = " ".join(r.stderr.split())
            assert r.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in said and names in said, r.stderr


def test_serve_with_an_empty_host_exits_2_instead_of_listening_on_the_default(settings) -> None:
    """`--host ''` (an unset shell variable) served on AUGLOOP_API_HOST's address unsaid."""
    r = run_augloop("serve", "--host", " ", "--port", "1", env=cli_env(settings), timeout=60)
    assert r.returncode == 2 and "--host is empty" in r.stderr, (r.returncode, r.stderr)


def test_the_cli_names_what_a_database_error_means_and_leaves_others_as_they_are() -> None:
    """A unique-key race (two imports creating one dataset) read "cannot be read"; any missing module read "a
    database augloop does not support". Each error is mapped for what it is."""
    import sqlite3

    import typer
    from sqlalchemy.exc import DatabaseError, IntegrityError, OperationalError
    from typer.testing import CliRunner

    from augloop.console import ErrorMappingGroup

    raised: list[BaseException] = []
    app = typer.Typer(cls=ErrorMappingGroup)

    @app.command()
    def go() -> None:
        raise raised[0]

    @app.command()
    def other() -> None:
        pass

    for error, said, code in (
        (
            IntegrityError("INSERT", {}, sqlite3.IntegrityError("UNIQUE constraint failed: datasets.name")),
            "another process changed the same data meanwhile; retry",
            2,
        ),
        (DatabaseError("SELECT", {}, sqlite3.DatabaseError("file is not a database")), "cannot be read", 2),
        # the disk's trouble, not a database that "did not answer"
        (OperationalError("COMMIT", {}, sqlite3.OperationalError("disk I/O error")), "disk failed a read or write", 2),
        (OperationalError("INSERT", {}, sqlite3.OperationalError("database or disk is full")), "disk is full", 2),
        (BrokenPipeError(32, "Broken pipe"), "Broken pipe", 2),  # another pipe than the output's: a failure
        (ModuleNotFoundError("No module named 'pymysql'", name="pymysql"), "does not support", 2),
        (ModuleNotFoundError("No module named 'plotly'", name="plotly"), None, 1),  # not a database's: a bug
    ):
        raised[:] = [error]
        result = CliRunner().invoke(app, ["go"])
        assert result.exit_code == code, (error, result.output)
        if said:
            assert said in " ".join(result.output.split()), result.output


def test_names_print_as_text_and_listing_filters_are_checked(settings, tmp_path):
    """What users name (labels, files, token users, project display names) prints as it is: rich read "[/]" as
    a closing tag, so `stats` and `project list` failed with a traceback for good, and `token create` committed a
    token it then never showed. A filter a typo would empty, or a file the import cannot read twice, is exit 2."""
    data = tmp_path / "[red]x.csv"
    data.write_text("text,lab\nhello one,[/]\nhello two,[red]b\n", encoding="utf-8")
    r = augloop(settings, "import", str(data), "--dataset", "d", "--task", "lab")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    r = augloop(settings, "stats", "d")
    assert r.returncode == 0 and "[/]" in r.stdout and "[red]b" in r.stdout, r.stdout + r.stderr
    r = augloop(settings, "token", "create", "--name", "[/]ann")
    assert r.returncode == 0 and r.stdout.strip().startswith("aug_") and "[/]ann" in r.stderr, r.stderr
    assert "[/]ann" in augloop(settings, "token", "list").stdout
    assert augloop(settings, "project", "create", "p1", "--display-name", "[/]").returncode == 0
    r = augloop(settings, "project", "list")
    assert r.returncode == 0 and "[/]" in r.stdout, r.stderr
    r = augloop(settings, "runs", "list", "--kind", "bogus")
    assert r.returncode == 2 and "kind must be one of single, tfidf, ensemble" in r.stderr
    r = augloop(settings, "runs", "list", "--limit", "-1")
    assert r.returncode == 2 and "Invalid value for '--limit'" in r.stderr and "greater than or equal to 1" in r.stderr
    r = augloop(settings, "import", "/dev/null", "--dataset", "d", "--task", "lab")
    assert r.returncode == 2 and "not a regular file" in r.stderr


def test_stats_print_the_imbalance_with_approved_variants_as_the_datasets_page_reads_it(monkeypatch) -> None:
    """`augloop stats` printed "imbalance with approved variants: 2.4×" beside "imbalance 2.4×" (2.44 and 2.42),
    and nothing where a class without train text (∞) got approved variants (3.0×), which the page shows."""
    import io

    from rich.console import Console

    from augloop import cli

    def stats(before: float | None, after: float | None, counts: dict[str, tuple[int, int]]) -> dict:
        labels = {
            label: {
                "by_split": {"train": n, "val": 0, "test": 0},
                "by_origin": {"wordnet:approved": m - n},
                "train_original": n,
                "train_with_approved": m,
            }
            for label, (n, m) in counts.items()
        }
        info = {"imbalance_ratio": before, "imbalance_ratio_with_approved": after, "labels": labels}
        return {"dataset": "d", "tasks": {"topic": {**info, "missing_label": 0, "classes_without_train_text": []}}}

    def printed(data: dict) -> str:
        out = io.StringIO()
        monkeypatch.setattr(cli, "console", Console(file=out, width=200))
        cli.print_stats(data)
        return out.getvalue()

    assert "with approved variants" not in printed(stats(2.44, 2.42, {"a": (22, 22), "b": (9, 9)}))
    assert "imbalance with approved variants: 3.0×" in printed(stats(None, 3.0, {"a": (30, 30), "b": (0, 10)}))
    assert "imbalance with approved variants: 1.7×" in printed(stats(2.44, 1.69, {"a": (22, 22), "b": (9, 13)}))


def test_token_and_role_commands_refuse_what_would_change_the_wrong_user(settings, engine) -> None:
    """A token asked for an existing user under another role, a revoke naming nobody, and a role change of the
    automatic reviewer are each refused with a message (exit 2), and nothing is written."""
    from typer.testing import CliRunner

    from augloop.cli import app
    from db.auth import automatic_reviewer
    from db.models import APIToken, User
    from db.session import session_scope

    runner = CliRunner()
    assert runner.invoke(app, ["token", "create", "--name", "ann", "--role", "annotator"]).exit_code == 0
    other_role = runner.invoke(app, ["token", "create", "--name", "ann", "--role", "admin"])
    assert other_role.exit_code == 2 and "exists with role 'annotator'" in other_role.output, other_role.output
    nobody = runner.invoke(app, ["token", "revoke"])
    assert nobody.exit_code == 2 and "give a token id or a user name" in nobody.output, nobody.output
    with session_scope(engine) as s:
        automatic_reviewer(s)
    system = runner.invoke(app, ["user", "role", "auto", "admin"])
    assert system.exit_code == 2 and "which does not change" in system.output, system.output
    with session_scope(engine) as s:
        assert {(u.name, u.role) for u in s.query(User)} == {("ann", "annotator"), ("auto", "system")}
        assert [t.revoked_at for t in s.query(APIToken)] == [None]


def test_output_piped_without_columns_keeps_lines_and_cells_whole(settings, tmp_path) -> None:
    """Piped into a file, a pager or a log with no COLUMNS, rich drew 80 columns: the import's summary broke
    mid-sentence and `augloop stats` folded a long label across two lines of its cell."""
    label = "a-label-name-long-enough-to-be-folded-across-lines-in-eighty-columns-of-a-table-with-eight-columns"
    data = tmp_path / "wide.csv"
    data.write_text(f"text,label,split\nfirst text,{label},train\nsecond text,short,train\nthird,short,val\n")
    env = {k: v for k, v in cli_env(settings).items() if k != "COLUMNS"}
    imported = run_augloop("import", str(data), "--dataset", "wide", "--task", "label", env=env)
    assert imported.returncode == 0, imported.stderr
    summary = imported.stdout.splitlines()[0]
    assert summary.startswith("imported 3 samples") and summary.endswith("0 duplicate(s) skipped"), imported.stdout
    stats = run_augloop("stats", "wide", env=env)
    assert any(label in line for line in stats.stdout.splitlines()), stats.stdout


def test_export_prints_the_import_that_recreates_its_label_sets_and_language(settings, engine, tmp_path) -> None:
    """An export holds rows, not the dataset's label sets (their order is the classes' ids; a class with no text
    is in no row) or its language: re-imported as it was, its classes came back sorted and its language `en`.
    `augloop export` prints the import that keeps them, one line to copy, however narrow the terminal."""
    import shlex

    from db.datasets import get_dataset
    from db.session import session_scope

    data = tmp_path / "in.csv"
    data.write_text("text,stance,split\nfirst,+1,train\nsecond,-1,train\nthird,Neutral,val\nfourth,+1,test\n")
    r = augloop(
        settings,
        "import",
        str(data),
        "-d",
        "src",
        "-t",
        "stance",
        "--labels",
        "stance=Neutral,-1,+1,unused",
        "--language",
        "de",
    )
    assert r.returncode == 0, r.stderr
    out = tmp_path / "a file.csv"
    exported = run_augloop("export", "src", "-o", str(out), env=cli_env(settings, COLUMNS="40"))
    assert exported.returncode == 0, exported.stderr
    lines = [line.strip() for line in exported.stderr.splitlines() if line.strip().startswith("augloop import ")]
    assert len(lines) == 1, exported.stderr
    args = shlex.split(lines[0])
    assert "--labels=stance=Neutral,-1,+1,unused" in args and "--language=de" in args and str(out) in args
    assert "--project=default" in args, args  # where it was (a reviewer's find: it went to default elsewhere)
    assert "another name" in exported.stderr  # the same --dataset on this server would add to the dataset itself
    args[args.index("--dataset=src")] = "--dataset=copy"
    again = augloop(settings, *args[1:])
    assert again.returncode == 0 and "not the exporting dataset's label sets" not in again.stderr, again.stderr
    piped = augloop(settings, "export", "src", "-o", "-")
    assert "augloop import FILE --dataset=src --task=stance" in piped.stderr, piped.stderr
    with session_scope(engine) as s:
        copy, source = get_dataset(s, "copy"), get_dataset(s, "src")
        assert (
            (copy.tasks, copy.language)
            == (source.tasks, source.language)
            == (
                [{"name": "stance", "labels": ["Neutral", "-1", "+1", "unused"]}],
                "de",
            )
        )
