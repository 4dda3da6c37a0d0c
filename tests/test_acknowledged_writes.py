"""What the API confirms is stored: every write commits before the client hears success, and a commit that
fails reaches the client as an error (issue 12, point 1). On SQLite and on the real Postgres server."""

from __future__ import annotations

import importlib.util
import random
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event, func, select
from sqlalchemy.exc import IntegrityError, OperationalError

from db.models import APIToken, Dataset, Project, Review, ReviewStatus, Sample, TrainingRun, User
from db.session import session_scope
from tests.conftest import EXAMPLE_CSV, REPO_ROOT, _issue
from tests.review_fixtures import seed_review_data


@pytest.fixture
def world(any_settings):
    """A database with review data, the example dataset (train/val/test) and an admin and annotator token."""
    from db.session import get_engine
    from services.importing import ImportSpec, import_file

    engine = get_engine(any_settings.resolved_database_url)
    data = seed_review_data(engine, hostile=False)
    with session_scope(engine) as s:
        import_file(
            s, EXAMPLE_CSV.read_bytes(), ImportSpec(dataset="psm", tasks=["bias", "message"]), filename=EXAMPLE_CSV.name
        )
    return {
        "settings": any_settings,
        "engine": engine,
        "data": data,
        "admin": _issue(engine, "ada-admin", "admin"),
        "annotator": _issue(engine, "ann", "annotator"),
    }


def _csv() -> bytes:
    return b"text,label\n" + b"".join(f"post number {i},{'a' if i % 3 else 'b'}\n".encode() for i in range(50))


# Each write: (name, who, method, path, request kwargs, a check that finds the write in the database).
def _writes(w: dict[str, Any]) -> list[tuple[str, str, str, str, dict[str, Any], Callable[[Any], bool]]]:
    data = w["data"]
    first = data.variants[data.sources[0]][0]

    def decided(s: Any) -> bool:
        return s.scalar(select(func.count()).select_from(Review).where(Review.sample_id == first)) == 1

    def bulk(s: Any) -> bool:
        family = data.variants[data.sources[1]]
        rows = s.scalars(select(Sample.review_status).where(Sample.id.in_(family)))
        return set(rows) == {ReviewStatus.approved}

    return [
        (
            "single decision",
            "annotator",
            "POST",
            f"/api/v1/samples/{first}/decision",
            {"json": {"decision": "approve", "version": 1}},
            decided,
        ),
        (
            "bulk decision",
            "annotator",
            "POST",
            f"/api/v1/datasets/{data.dataset}/bulk-decisions",
            {"json": {"decision": "approve", "parent_id": data.sources[1], "confirm": True}},
            bulk,
        ),
        (
            "import",
            "admin",
            "POST",
            "/api/v1/datasets/fresh/import",
            {"files": {"file": ("fresh.csv", _csv())}, "data": {"task": ["label"]}},
            lambda s: s.scalar(select(func.count()).select_from(Dataset).where(Dataset.name == "fresh")) == 1,
        ),
        (
            "token creation",
            "admin",
            "POST",
            "/api/v1/tokens",
            {"json": {"name": "newcomer", "role": "annotator"}},
            lambda s: (
                s.scalar(select(func.count()).select_from(APIToken).join(User).where(User.name == "newcomer")) == 1
            ),
        ),
        (
            "training-run request",
            "admin",
            "POST",
            "/api/v1/training-runs",
            {"json": {"dataset": "psm", "seeds": [1], "config": {"epochs": 1}}},
            lambda s: s.scalar(select(func.count()).select_from(TrainingRun)) == 1,
        ),
    ]


@contextmanager
def failing_commits(engine: Any) -> Iterator[None]:
    """Every COMMIT of a write on this engine fails, the way a full disk or a lost connection fails it. Not the
    read-only session that authenticates a request before its route runs (api/main.py AuthorizedFirst): failing
    it answered 503 before any route ran, so these tests passed without reaching a route's commit."""

    def refuse(conn: Any) -> None:
        if conn.get_execution_options().get("readonly"):
            return
        raise OperationalError("COMMIT", {}, Exception("disk I/O error (simulated)"))

    event.listen(engine, "commit", refuse)
    try:
        yield
    finally:
        event.remove(engine, "commit", refuse)


def test_a_failed_commit_reaches_the_client_and_nothing_is_stored(world) -> None:
    from fastapi.testclient import TestClient

    from api.main import create_app

    engine = world["engine"]
    app = create_app(world["settings"], engine)
    as_admin = {"Authorization": f"Bearer {world['admin']}"}
    # the route runs: its own refusal of a bad body, not the commit's 503
    with TestClient(app, raise_server_exceptions=False, headers=as_admin) as http, failing_commits(engine):
        assert http.post("/api/v1/projects", json={"name": "Not A Slug!!"}).status_code == 422
    for name, who, method, path, kwargs, stored in _writes(world):
        with TestClient(app, raise_server_exceptions=False, headers={"Authorization": f"Bearer {world[who]}"}) as http:
            with failing_commits(engine):
                r = http.request(method, path, **kwargs)
            assert r.status_code == 503, f"{name}: a write whose commit failed answered {r.status_code} {r.text}"
            assert "nothing was saved" in r.json()["detail"], name
            # a disk's I/O error is the disk's: not "busy or unreachable; retry" (a file size limit, a failing disk)
            assert "disk failed a read or write" in r.json()["detail"] and "retry" not in r.json()["detail"], name
            # the driver's words stay in the server's log: on Postgres they named the database's host and port
            assert "simulated" not in r.text, (name, r.text)
        with session_scope(engine) as s:
            assert not stored(s), f"{name}: the failed write is in the database"


@contextmanager
def commits_failing_with(engine: Any, orig: Exception) -> Iterator[None]:
    """Every COMMIT on this engine fails with the driver's error `orig`."""

    def refuse(_conn: Any) -> None:
        raise OperationalError("COMMIT", {}, orig)

    event.listen(engine, "commit", refuse)
    try:
        yield
    finally:
        event.remove(engine, "commit", refuse)


def test_a_statement_that_always_fails_is_not_answered_retry(world, caplog) -> None:
    """Every OperationalError was answered 503 "busy or unreachable; retry", also SQLite's "no such table" (a
    migration not run), which fails the same way every time: a client retried in circles. A failed statement is a
    500 that says nothing was saved; a deadlock Postgres broke is a 503 to retry at once; the driver's words stay in
    the log."""
    import sqlite3

    from fastapi.testclient import TestClient

    from api.main import create_app

    engine = world["engine"]
    app = create_app(world["settings"], engine)
    name, who, method, path, kwargs, stored = _writes(world)[0]
    with TestClient(app, raise_server_exceptions=False, headers={"Authorization": f"Bearer {world[who]}"}) as http:
        with commits_failing_with(engine, sqlite3.OperationalError("no such table: reviews_secret")):
            r = http.request(method, path, **kwargs)
        assert r.status_code == 500 and "Retry-After" not in r.headers, r.text
        assert "failed a statement" in r.json()["detail"] and "nothing was saved" in r.json()["detail"]
        assert "reviews_secret" not in r.text
        assert any("reviews_secret" in rec.getMessage() for rec in caplog.records)

        class Deadlock(Exception):  # psycopg's errors carry the SQLSTATE
            sqlstate = "40P01"

        with commits_failing_with(engine, Deadlock("deadlock detected")):
            r = http.request(method, path, **kwargs)
        assert r.status_code == 503 and r.headers["Retry-After"] == "1", r.text
        assert "concurrent" in r.json()["detail"] and "nothing was saved" in r.json()["detail"]
    with session_scope(engine) as s:
        assert not stored(s), f"{name}: the failed write is in the database"


def test_a_commit_that_lost_its_connection_is_not_answered_nothing_was_saved(world) -> None:
    """A connection lost as its COMMIT was sent (Postgres restarted, a proxy dropped it: seen through a proxy that
    forwarded the COMMIT and closed the connection) leaves the outcome unknown: the server had committed, and the
    API answered 503 "nothing was saved; retry" for a token it had issued (the client retried: two tokens, one
    that nobody held). The answer says it may have been saved. Simulated here: the COMMIT lands, then the driver
    reports the connection lost."""
    from fastapi.testclient import TestClient

    from api.main import create_app

    engine = world["engine"]
    app = create_app(world["settings"], engine)
    real_commit = engine.dialect.do_commit
    # The transaction that inserts the user loses its connection at COMMIT; no other (the request's own token
    # bookkeeping may commit a write first: losing that one stored no user, and the test read it as a failure)
    inserting = {"user": False}

    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO USERS"):
            inserting["user"] = True

    def commit_then_lose(dbapi_conn: Any) -> None:
        real_commit(dbapi_conn)
        if inserting["user"]:
            inserting["user"] = False
            raise engine.dialect.loaded_dbapi.OperationalError("server closed the connection unexpectedly (simulated)")

    def as_a_disconnect(context: Any) -> None:
        if "simulated" in str(context.original_exception):
            context.is_disconnect = True

    event.listen(engine, "handle_error", as_a_disconnect, insert=True)
    event.listen(engine, "after_cursor_execute", note)
    engine.dialect.do_commit = commit_then_lose  # type: ignore[method-assign]
    try:
        with TestClient(app, raise_server_exceptions=False, headers={"Authorization": f"Bearer {world['admin']}"}) as c:
            r = c.post("/api/v1/tokens", json={"name": "lost-at-commit", "role": "annotator"})
    finally:
        del engine.dialect.do_commit
        event.remove(engine, "after_cursor_execute", note)
        event.remove(engine, "handle_error", as_a_disconnect)
    assert r.status_code == 503, r.text
    detail = r.json()["detail"]
    assert "nothing was saved" not in detail and "may have been saved" in detail, detail
    assert "simulated" not in r.text
    with session_scope(engine) as s:  # it was: the client must look before it retries
        assert s.scalar(select(func.count()).select_from(User).where(User.name == "lost-at-commit")) == 1


@pytest.mark.slow
def test_every_acknowledged_write_survives_a_kill_as_the_answer_arrives(world) -> None:
    """SIGKILL the API the moment the client has its answer; the write must be in the database. The bulk
    decision covers 30,000 variants, whose commit takes long enough to lose when it runs after the answer."""
    from tests.test_faults import start_api

    engine = world["engine"]
    spec = importlib.util.spec_from_file_location("review_latency", REPO_ROOT / "bench" / "review_latency.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)  # type: ignore[union-attr]
    with session_scope(engine) as s:
        s.execute(Dataset.__table__.delete().where(Dataset.name == "psm"))
    bench.seed(engine, 30_000, random.Random(3))
    if engine.dialect.name == "postgresql":
        from sqlalchemy import text

        with engine.begin() as conn:
            conn.execute(text("SELECT setval(pg_get_serial_sequence('samples', 'id'), (SELECT max(id) FROM samples))"))
    with session_scope(engine) as s:
        pending = s.scalar(select(func.count()).select_from(Sample).where(Sample.review_status == "pending"))
    assert pending > 20_000
    writes = _writes(world)
    writes.insert(
        2,
        (
            "bulk decision over 20,000+",
            "annotator",
            "POST",
            f"/api/v1/datasets/{bench.DATASET}/bulk-decisions",
            {"json": {"decision": "approve", "filter": {}, "confirm": True}},
            lambda s: (
                s.scalar(
                    select(func.count())
                    .select_from(Sample)
                    .where(
                        Sample.review_status == "pending",
                        Sample.dataset_id == s.scalar(select(Dataset.id).where(Dataset.name == bench.DATASET)),
                    )
                )
                == 0
            ),
        ),
    )
    for name, who, method, path, kwargs, stored in writes:
        api, base = start_api(world["settings"])
        try:
            with httpx.Client(base_url=base, timeout=120, headers={"Authorization": f"Bearer {world[who]}"}) as http:
                r = http.request(method, path, **kwargs)
                api.send_signal(signal.SIGKILL)
            api.wait(10)
        finally:
            if api.poll() is None:
                api.kill()
        assert r.status_code < 300, f"{name}: {r.status_code} {r.text}"
        engine.dispose()
        with session_scope(engine) as s:
            assert stored(s), f"{name}: answered {r.status_code}, but the write is not in the database"


def test_a_queued_import_whose_commit_fails_leaves_no_upload_behind(world) -> None:
    """The upload is kept on disk for its job; a job that is never stored must not leave the file (a large
    upload, retried after a 503, would otherwise fill the disk a copy at a time)."""
    from fastapi.testclient import TestClient

    from api.main import create_app
    from services.datasets import uploads_folder

    engine = world["engine"]
    app = create_app(world["settings"], engine)
    with TestClient(app, raise_server_exceptions=False, headers={"Authorization": f"Bearer {world['admin']}"}) as http:
        files = {"file": ("fresh.csv", _csv())}
        with failing_commits(engine):
            r = http.post("/api/v1/datasets/fresh/imports", files=files, data={"task": ["label"]})
        assert r.status_code == 503, r.text
        assert not uploads_folder().exists() or not any(uploads_folder().iterdir())
        r = http.post("/api/v1/datasets/fresh/imports", files=files, data={"task": ["label"]})
        assert r.status_code == 202 and len(list(uploads_folder().glob("*"))) == 1


def test_files_of_an_uncommitted_transaction_are_discarded(engine, tmp_path) -> None:
    from db.session import discard_unless_committed

    kept, lost, inner = tmp_path / "kept.txt", tmp_path / "lost", tmp_path / "inner.txt"
    with session_scope(engine) as s:
        kept.write_text("x")
        discard_unless_committed(s, kept)
    with pytest.raises(RuntimeError), session_scope(engine) as s:
        lost.mkdir()
        (lost / "predictions.json").write_text("{}")
        discard_unless_committed(s, lost)
        raise RuntimeError("after the write")
    outer, rolled_back, nested = tmp_path / "outer.txt", tmp_path / "rolled_back.txt", tmp_path / "nested"
    with session_scope(engine) as s:
        outer.write_text("x")
        discard_unless_committed(s, outer)
        with s.begin_nested() as savepoint:
            inner.write_text("x")
            discard_unless_committed(s, inner)
        with s.begin_nested() as savepoint:
            rolled_back.write_text("x")
            discard_unless_committed(s, rolled_back)
            with s.begin_nested():
                nested.mkdir()
                discard_unless_committed(s, nested)
            savepoint.rollback()
        assert outer.exists() and inner.exists(), "a savepoint's rollback is not the transaction's, nor a sibling's"
        assert not rolled_back.exists() and not nested.exists(), "written inside the savepoint that rolled back"
    assert outer.exists() and inner.exists(), "committed"
    flushed = tmp_path / "flushed.txt"
    with session_scope(engine) as s:
        with pytest.raises(IntegrityError), s.begin_nested():
            flushed.write_text("x")
            discard_unless_committed(s, flushed)
            s.add_all([Project(name="twice", display_name="t"), Project(name="twice", display_name="t")])
            s.flush()  # fails: the savepoint's rows are undone, and so is its file
        assert not flushed.exists(), "a failed flush rolls back the savepoint it runs in"
    assert outer.exists() and inner.exists()
    released = tmp_path / "released.txt"
    with pytest.raises(RuntimeError), session_scope(engine) as s:
        released.write_text("x")
        discard_unless_committed(s, released)
        with s.begin_nested():
            pass  # a savepoint released is not the transaction committed
        raise RuntimeError("after the savepoint")
    assert kept.exists() and not lost.exists() and inner.exists() and not released.exists()


def test_files_are_deleted_only_when_the_deletion_that_asked_commits(engine, tmp_path) -> None:
    from sqlalchemy.orm import Session

    from db.session import delete_when_committed

    def made(name: str) -> Path:
        path = tmp_path / name
        path.write_text("x")
        return path

    committed, rolled_back, in_savepoint, closed = made("a"), made("b"), made("c"), made("d")
    with session_scope(engine) as s:
        delete_when_committed(s, committed)
        assert committed.exists(), "deleted before its rows are gone for good"
    assert not committed.exists()
    with pytest.raises(RuntimeError), session_scope(engine) as s:
        delete_when_committed(s, rolled_back)
        raise RuntimeError("the deletion rolls back")
    assert rolled_back.exists()
    with session_scope(engine) as s, s.begin_nested() as savepoint:
        delete_when_committed(s, in_savepoint)
        savepoint.rollback()
    assert in_savepoint.exists(), "asked in a savepoint that rolled back"
    with Session(engine) as s:
        s.begin()
        delete_when_committed(s, closed)
        s.close()  # neither committed nor rolled back by the caller: the session is reused for another transaction
        s.begin()
        s.commit()
    assert closed.exists(), "a closed transaction's deletion was carried into the next one's commit"


def test_a_failed_statement_keeps_its_values_out_of_messages_and_logs(engine) -> None:
    """A failed insert of an augment job's variants logged its parameters: 560,000 characters of the dataset's
    texts in the worker's log."""
    from sqlalchemy import text
    from sqlalchemy.exc import IntegrityError

    from db.session import session_scope

    secret = "a text of the dataset, " * 20
    with pytest.raises(IntegrityError) as err, session_scope(engine) as s:
        s.execute(
            text("INSERT INTO samples (id, dataset_id, text) VALUES (:id, :ds, :text)"),
            {"id": 1, "ds": 999_999, "text": secret},
        )
    assert secret not in str(err.value) and "hidden due to hide_parameters" in str(err.value)


def test_constraint_races_answer_what_happened(settings) -> None:
    """A write racing a delete broke a foreign key and was told "retry" (the retry met the same absence); the
    same new text stored twice at once got no field, where the check that lost the race names `text`. Read from
    the driver's codes: a NOT NULL failure on content_hash is no duplicate text."""
    import sqlite3

    from fastapi.testclient import TestClient
    from sqlalchemy.exc import IntegrityError

    from api.main import create_app

    db = sqlite3.connect(":memory:")
    db.executescript(
        "PRAGMA foreign_keys = ON; CREATE TABLE datasets (id INTEGER PRIMARY KEY, name TEXT UNIQUE);"
        "CREATE TABLE samples (dataset_id INTEGER REFERENCES datasets (id), content_hash TEXT NOT NULL,"
        " UNIQUE (dataset_id, content_hash)); INSERT INTO datasets VALUES (1, 'd');"
        "INSERT INTO samples VALUES (1, 'h');"
    )
    raised: dict[str, Exception] = {}
    for kind, statement in (
        ("fk", "INSERT INTO samples VALUES (2, 'x')"),
        ("text", "INSERT INTO samples VALUES (1, 'h')"),
        ("null", "INSERT INTO samples VALUES (1, NULL)"),
        ("name", "INSERT INTO datasets VALUES (2, 'd')"),
    ):
        try:
            db.execute(statement)
        except sqlite3.IntegrityError as err:
            raised[kind] = err
    app = create_app(settings)

    def boom(kind: str) -> None:
        raise IntegrityError("INSERT", {}, raised[kind])

    app.add_api_route("/boom/{kind}", boom)
    with TestClient(app, raise_server_exceptions=False) as http:
        fk, text, null, name = (http.get(f"/boom/{kind}") for kind in ("fk", "text", "null", "name"))
    assert fk.status_code == 404 and "deleted by another request meanwhile" in fk.json()["detail"]
    assert "nothing was saved" not in fk.json()["detail"]  # a GET saves nothing: it is said of writes only
    assert text.status_code == 409 and text.json()["field"] == "text"
    for other in (null, name):
        assert other.status_code == 409 and "field" not in other.json() and "retry" in other.json()["detail"]


def test_a_read_the_database_failed_is_not_told_nothing_was_saved(settings) -> None:
    """A GET the database failed (Postgres stopped, SQLite locked) was answered "…, so nothing was saved; retry",
    as a write is: a read saves nothing (an operator's find). A write is still told."""
    import sqlite3

    from fastapi.testclient import TestClient
    from sqlalchemy.exc import OperationalError

    from api.main import create_app

    app = create_app(settings)

    def busy() -> None:
        raise OperationalError("SELECT", {}, sqlite3.OperationalError("database is locked"))

    def full() -> None:
        raise OperationalError("SELECT", {}, sqlite3.OperationalError("database or disk is full"))

    app.add_api_route("/busy", busy, methods=["GET", "POST"])
    app.add_api_route("/full", full, methods=["GET", "POST"])
    with TestClient(app, raise_server_exceptions=False) as http:
        for path, status in (("/busy", 503), ("/full", 507)):
            read, write = http.get(path), http.post(path)
            assert read.status_code == write.status_code == status, (read.text, write.text)
            assert "nothing was saved" not in read.json()["detail"], read.text
            assert "nothing was saved" in write.json()["detail"], write.text
        assert (
            http.get("/busy").json()["detail"]
            == "the database is busy with another write and did not complete the request; retry"
        )


def test_a_commit_stays_visible_to_other_processes_after_the_pool_opens_another_connection(tmp_path) -> None:
    """SQLite's locks are the process's own, and closing any descriptor of the file releases them all: the header
    check of each new pooled connection (db/session.py) opened and closed the file, releasing the locks of the
    connections already open, so a worker that closed its connection took itself for the last one, checkpointed
    the WAL and deleted it with the shared-memory file under the API. The API's next commit went into the deleted
    WAL: read back by the API, never seen by a worker, and lost when the API was killed (the API's reads
    meanwhile: "database disk image is malformed")."""
    import subprocess
    import sys

    from sqlalchemy import text

    from db.session import make_engine

    db = tmp_path / "augloop.db"
    engine = make_engine(f"sqlite:///{db}")
    with engine.begin() as c:
        c.execute(text("CREATE TABLE t (x INTEGER)"))
    held = engine.connect()  # a pooled connection, open between requests as the API's are
    held.execute(text("SELECT 1")).all()
    held.commit()
    engine.connect().close()  # two requests at once: the pool opens another connection

    def elsewhere(code: str) -> str:  # another process: a worker, the CLI
        run = f"import sqlite3; c = sqlite3.connect({str(db)!r}); {code}; c.close()"
        return subprocess.run([sys.executable, "-c", run], check=True, capture_output=True, text=True).stdout.strip()

    elsewhere("c.execute('INSERT INTO t VALUES (1)'); c.commit()")
    assert (tmp_path / "augloop.db-wal").exists(), "another process's close deleted the WAL under an open connection"
    held.execute(text("INSERT INTO t VALUES (2)"))
    held.commit()
    assert elsewhere("print(c.execute('SELECT x FROM t ORDER BY x').fetchall())") == "[(1,), (2,)]"
    held.close()
    engine.dispose()


def test_the_cli_says_a_commit_that_lost_its_connection_may_have_been_saved() -> None:
    """`augloop token create` prints its token before the commit: a connection lost as the COMMIT went out said
    "the database did not answer", as if nothing had been stored."""
    import sqlite3

    from sqlalchemy.exc import OperationalError

    from augloop.console import database_problem
    from db.session import _IN_COMMIT

    lost = OperationalError("COMMIT", {}, sqlite3.OperationalError("server closed the connection"))
    lost.connection_invalidated = True
    assert database_problem(lost).startswith("the database did not answer")  # before the COMMIT: nothing stored
    setattr(lost, _IN_COMMIT, True)
    said = database_problem(lost)
    assert "may have been saved" in said and "check before you run it again" in said, said
