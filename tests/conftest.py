"""Shared fixtures: a fresh database per test (migrated by Alembic once, then copied), settings, API clients."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# amp auto: fp32 on every CPU, so that the suite runs alike wherever it runs (subprocesses inherit it);
# tests/test_trainer_precision.py and the bf16 DDP test take bf16 on purpose.
os.environ["AUGLOOP_CPU_BF16"] = "0"
# rich fixes a console's width from COLUMNS when the console is made (augloop.console, at import), and
# pytest-xdist's workers start with COLUMNS=80: the CLI tests set the width they read per run.
for _name in ("COLUMNS", "LINES"):
    os.environ.pop(_name, None)

# The augmentation fixtures (tiny models, NLTK data, augment_env...), for every test module that names one.
pytest_plugins = ["tests.augment_fixtures"]

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_CSV = REPO_ROOT / "examples" / "political_social_media.csv"


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file at the latest Alembic revision, copied for each test (faster than migrating each time)."""
    from db.migrate import upgrade_to_head
    from db.session import make_engine

    path = tmp_path_factory.mktemp("template") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade_to_head(engine)
    engine.dispose()  # closing the last connection checkpoints the WAL into the main file
    return path


@pytest.fixture
def settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, migrated_template: Path, tmp_path_factory: pytest.TempPathFactory
):
    """Settings pointing at a fresh database and data directory for this test; the tiny models the tests build
    (under pytest's temporary directory) are in the allowed models directory."""
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    db_path = data_dir / "augloop.db"
    shutil.copy(migrated_template, db_path)
    yield from _settings_on(f"sqlite:///{db_path}", data_dir, monkeypatch, tmp_path_factory)


def _settings_on(
    database_url: str, data_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """The settings of a test on `database_url` with `data_dir`, no retry back-off, and the tiny models the tests
    build (under pytest's temporary directory) in the allowed models directory; cached settings and engines are
    dropped before and after."""
    from core import settings as settings_mod
    from db import session as session_mod

    monkeypatch.setenv("AUGLOOP_DATA_DIR", str(data_dir))
    monkeypatch.setenv("AUGLOOP_DATABASE_URL", database_url)
    monkeypatch.setenv("AUGLOOP_JOB_RETRY_BASE_SECONDS", "0")
    monkeypatch.setenv("AUGLOOP_MODELS_DIR", str(tmp_path_factory.getbasetemp()))
    settings_mod.get_settings.cache_clear()
    session_mod.dispose_all()
    yield settings_mod.get_settings()
    session_mod.dispose_all()
    settings_mod.get_settings.cache_clear()


@pytest.fixture
def engine(settings):
    from db.session import get_engine

    return get_engine(settings.resolved_database_url)


@pytest.fixture
def db_session(engine) -> Iterator:
    from sqlalchemy.orm import Session

    with Session(bind=engine, expire_on_commit=False) as session:
        yield session


def join_project(session, user_name: str, project: str = "default", role: str = "annotator") -> None:
    """Make a user a member of a project (the datasets the fixtures import go into "default")."""
    from services.projects import add_member

    add_member(session, project, user_name, role)


def _issue(engine, name: str, role: str, project_role: str | None = "annotator") -> str:
    """A token for a new user; a non-admin also joins the default project (with `project_role`; None: not)."""
    from db.auth import create_token
    from db.session import session_scope

    with session_scope(engine) as s:
        token = create_token(s, name, role).token
        if role != "admin" and project_role is not None:
            join_project(s, name, role=project_role)
        return token


@pytest.fixture
def admin_token(engine) -> str:
    return _issue(engine, "alice-admin", "admin")


@pytest.fixture
def annotator_token(engine) -> str:
    """An annotator of the default project (where the fixtures' datasets are)."""
    return _issue(engine, "bob-annotator", "annotator")


@pytest.fixture
def lead_token(engine) -> str:
    """A lead of the default project: changes its datasets' settings, starts augmentation and training."""
    return _issue(engine, "lena-lead", "annotator", project_role="lead")


@pytest.fixture
def app(settings, engine):
    from api.main import create_app

    return create_app(settings, engine)


@pytest.fixture
def client(app) -> Iterator:
    from fastapi.testclient import TestClient

    with TestClient(app) as c:
        yield c


@pytest.fixture
def admin(client, admin_token):
    """An HTTP client authenticated as an admin."""
    client.headers["Authorization"] = f"Bearer {admin_token}"
    return client


@pytest.fixture
def annotator(app, annotator_token) -> Iterator:
    from fastapi.testclient import TestClient

    with TestClient(app, headers={"Authorization": f"Bearer {annotator_token}"}) as c:
        yield c


@pytest.fixture
def lead(app, lead_token) -> Iterator:
    from fastapi.testclient import TestClient

    with TestClient(app, headers={"Authorization": f"Bearer {lead_token}"}) as c:
        yield c


@pytest.fixture
def example_dataset(engine) -> str:
    """The bundled example dataset imported with its three tasks."""
    from db.session import session_scope
    from services.importing import ImportSpec, import_file

    with session_scope(engine) as s:
        import_file(
            s,
            EXAMPLE_CSV.read_bytes(),
            ImportSpec(dataset="psm", tasks=["bias", "message", "audience"]),
            filename=EXAMPLE_CSV.name,
        )
    return "psm"


def _settle_background_builds() -> bool:
    guard = sys.modules.get("services.leak_guard")
    return guard is None or guard.settle(60)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """A leak-guard index that a test's queue read started building in the background
    (services/leak_guard.warm_soon) is done when the test is, before its database goes, and before the next test,
    whose own counts of builds and kept indexes it would otherwise join."""
    try:
        result = yield
    except KeyboardInterrupt:
        raise
    except BaseException:
        _settle_background_builds()  # the test's own failure is the one to report
        raise
    if not _settle_background_builds():  # it would count in the next tests' builds and hold their one slot
        pytest.exit(f"a background leak-guard build outlived {item.nodeid} by a minute", returncode=1)
    return result


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server for the session. Missing binaries fail under CI=true and skip elsewhere."""
    from tests.pg_server import PostgresServer, pg_bin

    if pg_bin() is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("PostgreSQL binaries missing in CI: `make test` should have installed them")
        pytest.skip("PostgreSQL server binaries not installed (run `make system-deps`)")
    server = PostgresServer().start()
    yield server
    server.stop()


_pg_counter = 0


@pytest.fixture
def pg_settings(
    postgres_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
):
    """Settings pointing at a fresh Postgres database (migrated by Alembic on first use) for this test."""
    global _pg_counter
    _pg_counter += 1
    url = postgres_server.create_database(f"t{os.getpid()}_{_pg_counter}")
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    yield from _settings_on(url, data_dir, monkeypatch, tmp_path_factory)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_settings(request):
    """The same test on SQLite and on the real Postgres server."""
    if request.param == "sqlite":
        return request.getfixturevalue("settings")
    return request.getfixturevalue("pg_settings")


@pytest.fixture
def any_engine(any_settings):
    from db.session import get_engine

    return get_engine(any_settings.resolved_database_url)
