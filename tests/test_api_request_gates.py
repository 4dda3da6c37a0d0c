"""What a request may hold before it is authorized or queued: one slow client must not stop everyone's writes,
and an upload is authorized before its body is read. Driven at the ASGI level, where a body can arrive slowly
(or never) and where we can see whether the server read it."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from api.main import SQLiteWriteQueue

API = "/api/v1"


def _scope(method: str, path: str, headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers or [],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }


def _sent() -> tuple[list[dict[str, Any]], Any]:
    messages: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    return messages, send


def test_a_body_that_never_finishes_does_not_hold_the_write_lock() -> None:
    """A client that announces a body and sends half of it (or a slow one) waits alone: another user's write
    goes through while it hangs."""
    served: list[str] = []

    async def app(scope, receive, send) -> None:  # a writing route: reads its body, answers
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        served.append(body.decode())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    queue = SQLiteWriteQueue(app)

    async def scenario() -> None:
        never = asyncio.Event()

        async def slow_receive() -> dict[str, Any]:
            if not hasattr(slow_receive, "sent"):
                slow_receive.sent = True  # type: ignore[attr-defined]
                return {"type": "http.request", "body": b'{"deci', "more_body": True}
            await never.wait()  # the rest never comes
            return {"type": "http.disconnect"}

        async def full_receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b'{"decision": "approve"}', "more_body": False}

        _, send_a = _sent()
        sent_b, send_b = _sent()
        hanging = asyncio.create_task(queue(_scope("POST", f"{API}/samples/1/decision"), slow_receive, send_b))
        await asyncio.sleep(0.05)
        await asyncio.wait_for(queue(_scope("POST", f"{API}/samples/2/decision"), full_receive, send_a), timeout=2)
        assert served == ['{"decision": "approve"}']
        assert not hanging.done()
        hanging.cancel()
        del sent_b

    asyncio.run(scenario())


def test_the_whole_body_reaches_the_app_in_order_and_a_disconnect_after_it() -> None:
    seen: list[dict[str, Any]] = []

    async def app(scope, receive, send) -> None:
        for _ in range(4):
            seen.append(await receive())
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    messages = [
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.request", "body": b"cd", "more_body": True},
        {"type": "http.request", "body": b"e", "more_body": False},
        {"type": "http.disconnect"},
    ]
    feed = iter(messages)

    async def receive() -> dict[str, Any]:
        return next(feed)

    _, send = _sent()
    asyncio.run(SQLiteWriteQueue(app)(_scope("POST", f"{API}/augment"), receive, send))
    assert seen == messages


@pytest.mark.parametrize(
    ("path", "queued"),
    [
        (f"{API}/models/3/predict", False),
        (f"{API}/training-estimates", False),
        (f"{API}/datasets/psm/impact-estimates", False),
        (f"{API}/training-runs", True),
        (f"{API}/samples/1/decision", True),
    ],
)
def test_posts_that_only_compute_pass_a_held_write_lock(path: str, queued: bool) -> None:
    """A prediction, a training estimate or an impact report's (seconds of model time, no write) does not wait for,
    or hold up, the writes; every other POST still queues."""

    async def app(scope, receive, send) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    queue = SQLiteWriteQueue(app)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def scenario() -> bool:
        _, send = _sent()
        async with queue.lock:  # another write is in the app
            try:
                await asyncio.wait_for(queue(_scope("POST", path), receive, send), timeout=0.3)
            except TimeoutError:
                return True
        return False

    assert asyncio.run(scenario()) is queued


@pytest.mark.parametrize(
    ("who", "status"), [(None, 401), ("aug_not-a-token", 401), ("annotator", 403), ("admin", None)]
)
def test_an_upload_is_authorized_before_its_body_is_read(app, admin_token, annotator_token, who, status) -> None:
    """Without an admin token, an import upload (up to 16 GiB) is refused with the route's own error before a
    byte of it is read: nothing is streamed to the server's temporary disk."""
    token = {"admin": admin_token, "annotator": annotator_token}.get(who, who)
    headers = [(b"content-type", b"multipart/form-data; boundary=xyz"), (b"content-length", str(10 * 2**30).encode())]
    if token:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    reads: list[int] = []

    async def receive() -> dict[str, Any]:
        reads.append(1)
        return {"type": "http.disconnect"}  # the client goes away once the server starts reading

    messages, send = _sent()

    async def run() -> None:
        try:
            await app(_scope("POST", f"{API}/datasets/fresh/imports", headers), receive, send)
        except Exception:  # the admin's request reads, meets the disconnect and ends however the stack ends it
            if who != "admin":
                raise

    asyncio.run(run())
    if status is None:
        assert reads, "an admin's upload is read"
        return
    assert reads == []
    start = next(m for m in messages if m["type"] == "http.response.start")
    assert start["status"] == status
    body = json.loads(b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body"))
    assert body["detail"]


def test_a_training_estimate_reads_while_another_connection_holds_the_write_lock(lead, engine, example_dataset) -> None:
    """An estimate passes the write queue, so it must not take SQLite's write lock either: with BEGIN IMMEDIATE
    it waited out the busy timeout behind a writer (and held the lock for its whole scan when it got it)."""
    import time

    writer = engine.raw_connection()
    try:
        writer.cursor().execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        r = lead.post(f"{API}/training-estimates", json={"dataset": example_dataset, "config": {"epochs": 1}})
        assert r.status_code == 200, r.text
        assert time.monotonic() - started < 5
        started = time.monotonic()  # an impact report's estimate too (the example has no approved variant: 422)
        r = lead.post(f"{API}/datasets/{example_dataset}/impact-estimates", json={"config": {"epochs": 1}})
        assert r.status_code == 422 and r.json()["field"] == "dataset", r.text
        assert time.monotonic() - started < 5
    finally:
        writer.rollback()
        writer.close()


def test_bodies_waiting_for_the_lock_are_held_in_memory_only_up_to_a_bound() -> None:
    """Past BUFFERED_BYTES of bodies waiting at once, a request is answered 503 (retry) before it queues, so many
    large bodies sent together cannot fill the server's memory; it once queued with its body unread and read it
    holding the lock, so two connections that sent 66 MiB and stopped held every other write (an attacker's
    find)."""
    served: list[int] = []

    async def app(scope, receive, send) -> None:
        served.append(1)
        await receive()
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    queue = SQLiteWriteQueue(app)
    queue.BUFFERED_BYTES = 25  # type: ignore[misc]

    def body_in(parts: int):  # type: ignore[no-untyped-def]
        left = [parts]

        async def receive() -> dict[str, Any]:
            left[0] -= 1
            return {"type": "http.request", "body": b"x" * 10, "more_body": left[0] > 0}

        return receive

    async def scenario() -> None:
        messages, send = _sent()
        await queue(_scope("POST", f"{API}/augment"), body_in(2), send)  # 20 bytes: held, then served
        assert served == [1] and messages[0]["status"] == 204 and queue.buffered == 0
        messages, send = _sent()
        async with queue.lock:  # a write under way: a body of 40 bytes would be held past the bound
            await asyncio.wait_for(queue(_scope("POST", f"{API}/augment"), body_in(4), send), timeout=2)
        assert served == [1] and messages[0]["status"] == 503 and queue.buffered == 0
        assert (b"retry-after", b"1") in messages[0]["headers"]

    asyncio.run(scenario())


def test_a_body_is_not_read_before_its_token_is_checked(client) -> None:
    """Without a valid token a request with a body gets its 401 at once, its body unread: a 50 MiB JSON body
    cost the API 360 MB before the 401, and such bodies waited in the write queue's buffer and for its lock,
    holding every annotator's writes (an attacker's finds)."""
    from api.main import AuthorizedFirst

    app = client.app
    reads: list[int] = []

    async def receive() -> dict[str, Any]:
        reads.append(1)
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def scenario(headers: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
        messages, send = _sent()
        scope = _scope("POST", f"{API}/samples/1/decision", headers) | {"app": app}
        await AuthorizedFirst(app)(scope, receive, send)
        return messages

    for headers in ([], [(b"authorization", b"Bearer aug_not-a-token")]):
        messages = asyncio.run(scenario(headers))
        assert messages[0]["status"] == 401 and reads == [], (messages[:1], reads)


def test_an_import_upload_is_kept_without_holding_the_write_lock(admin, engine, monkeypatch) -> None:
    """Keeping an import job's upload (up to AUGLOOP_MAX_UPLOAD_BYTES: minutes for gigabytes) holds no write lock:
    on SQLite the request's transaction took the only one at its first statement, so every annotator's decision,
    and the workers' heartbeats, waited out the copy (and failed past the 30 s busy timeout)."""
    import shutil

    import services.datasets as dataset_service
    from tests.review_fixtures import write_meanwhile

    real_copy = shutil.copyfileobj
    others: list[str] = []
    someone_writes = write_meanwhile(engine, others)

    def copy_while_someone_writes(source, target, length=0):  # type: ignore[no-untyped-def]
        someone_writes()
        return real_copy(source, target, length)

    monkeypatch.setattr(dataset_service.shutil, "copyfileobj", copy_while_someone_writes)
    data = b"text,label\n" + b"".join(b"post number %d,%s\n" % (i, b"ab"[i % 2 : i % 2 + 1]) for i in range(20))
    r = admin.post(f"{API}/datasets/held/imports", files={"file": ("held.csv", data)}, data={"task": ["label"]})
    assert r.status_code == 202, r.text
    assert others == ["wrote"]
    assert admin.get(f"{API}/jobs/{r.json()['id']}").json()["params"]["upload"] == r.json()["params"]["upload"]
    form = {"task": ["label"], "project": "nowhere"}
    r = admin.post(f"{API}/datasets/other/imports", files={"file": ("held.csv", data)}, data=form)
    assert r.status_code == 404 and r.json()["field"] == "project", "refused before the upload is kept"
    assert others == ["wrote"]


def test_a_full_disk_during_an_upload_is_a_json_error_and_keeps_nothing(
    admin, engine, settings, monkeypatch, caplog
) -> None:
    """The upload's write failed with ENOSPC: the client got a bare `500 Internal Server Error` in plain text,
    with nothing to say that nothing was kept or that a retry later may work. The operator's log has the path
    and the traceback."""
    import errno

    from sqlalchemy import func, select

    import services.datasets as dataset_service
    from db.models import Job
    from db.session import session_scope

    def full(source, target, length=0):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, "No space left on device", str(settings.data_dir / "imports" / "x.csv"))

    monkeypatch.setattr(dataset_service.shutil, "copyfileobj", full)
    data = b"text,label\n" + b"".join(b"post %d,%s\n" % (i, b"ab"[i % 2 : i % 2 + 1]) for i in range(10))
    r = admin.post(f"{API}/datasets/full/imports", files={"file": ("full.csv", data)}, data={"task": ["label"]})
    assert r.status_code == 507 and r.headers["content-type"] == "application/json", r.text
    assert "storage is full, so nothing was saved" in r.json()["detail"] and str(settings.data_dir) not in r.text
    logged = [rec for rec in caplog.records if "No space left on device" in rec.getMessage()]
    assert logged and logged[0].exc_info is not None and "x.csv" in logged[0].getMessage()
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(Job)) == 0
    assert list((settings.data_dir / "imports").iterdir()) == []


def test_the_query_string_names_only_what_a_route_takes_and_each_once(annotator, example_dataset) -> None:
    """An unknown parameter was ignored (`?metod=wordnet` showed the whole queue, `?formt=jsonl` exported CSV)
    and a repeated one kept its last value (`?include=original&include=approved`, what HTTP clients send for a
    list, exported no originals); both are 422 naming the parameter (an attacker's finds)."""
    queue = f"{API}/datasets/{example_dataset}/review-queue"
    for url, field in (
        (f"{queue}?metod=wordnet", "metod"),
        (f"{API}/jobs?state=failed", "state"),
        (f"{API}/datasets/{example_dataset}/export?formt=jsonl", "formt"),
        (f"{API}/datasets/{example_dataset}/export?include=original&include=approved", "include"),
        (f"{queue}?status=approved&status=pending", "status"),
    ):
        r = annotator.get(url)
        assert r.status_code == 422 and r.json()["field"] == field, (url, r.text)
    assert annotator.get(f"{queue}?status=pending&page_size=5").status_code == 200
    export = annotator.get(f"{API}/datasets/{example_dataset}/export?include=original,approved")
    assert export.status_code == 200
    assert annotator.get("/healthz?t=1700000000").status_code == 200  # a monitor's cache-buster


def test_ids_in_paths_are_digits_and_a_trailing_slash_is_no_redirect(annotator, example_dataset) -> None:
    """`/samples/1.0`, `+1`, `1_0` and a full-width one all reached sample 1; `/jobs/` answered 307 to an http
    address built from the Host header, with an empty body (an attacker's finds)."""
    sample_id = 1  # the example dataset's first text
    assert annotator.get(f"{API}/samples/{sample_id}").status_code == 200
    for written in (f"{sample_id}.0", f"+{sample_id}", f"0_{sample_id}", "%EF%BC%91", f"%20{sample_id}"):
        r = annotator.get(f"{API}/samples/{written}")
        assert r.status_code == 422 and r.json()["field"] == "sample_id", (written, r.text)
    slash = annotator.get(f"{API}/jobs/", follow_redirects=False)
    assert slash.status_code == 404 and "location" not in slash.headers and slash.json()["detail"], slash.text


def test_head_is_answered_wherever_get_is(client, annotator, example_dataset) -> None:
    """`curl -I` and uptime checks got 405 (an attacker's find)."""
    health = client.head("/healthz")
    assert health.status_code == 200 and health.content == b""
    r = annotator.head(f"{API}/datasets/{example_dataset}")
    assert r.status_code == 200 and r.content == b"" and r.headers["content-type"] == "application/json"


def test_a_405_names_every_method_its_path_takes(client, annotator, example_dataset) -> None:
    """FastAPI makes one route per method, and Starlette's 405 named the first route's only: a POST to
    /datasets/{name} (GET, PATCH, DELETE) was told `Allow: GET`."""
    for method in ("POST", "PUT"):
        r = annotator.request(method, f"{API}/datasets/{example_dataset}")
        assert r.status_code == 405 and r.headers["allow"] == "DELETE, GET, HEAD, PATCH", (method, r.headers)
        assert r.json()["detail"], r.text
    assert annotator.delete(f"{API}/jobs").headers["allow"] == "GET, HEAD"
    assert annotator.get(f"{API}/datasets/{example_dataset}/import").headers["allow"] == "POST"
    assert client.post("/healthz").headers["allow"] == "GET, HEAD"
    # a mount's own file (the docs' stylesheet): its Allow as it said it, not '' (no method at all)
    assert client.post("/docs-assets/swagger-ui.css").headers["allow"] == "GET, HEAD"


def test_head_on_an_export_answers_as_its_get_without_exporting(
    app, admin, engine, example_dataset, monkeypatch
) -> None:
    """HEAD on the export URL ran the whole export (3.6 s for 60,000 rows) only to drop the body; it answers the
    GET's status and headers, its refusals included, without reading a row."""
    from fastapi.testclient import TestClient

    import services.datasets as dataset_service
    from tests.conftest import _issue

    url = f"{API}/datasets/{example_dataset}/export"
    get = admin.get(url, params={"format": "jsonl"})
    read: list[str] = []
    real = dataset_service.iter_export

    def counted(*args: Any, **kwargs: Any) -> Any:
        read.append(url)
        return real(*args, **kwargs)

    monkeypatch.setattr(dataset_service, "iter_export", counted)
    head = admin.head(url, params={"format": "jsonl"})
    assert head.status_code == get.status_code == 200 and head.content == b"" and get.content
    shown = ("content-type", "content-disposition", "content-length")
    assert {k: head.headers.get(k) for k in shown} == {k: get.headers.get(k) for k in shown}
    assert head.headers["content-disposition"] == f'attachment; filename="{example_dataset}.jsonl"'
    outsider = TestClient(app, headers={"Authorization": f"Bearer {_issue(engine, 'olga', 'annotator', None)}"})
    for who, asked, status in (
        (TestClient(app), url, 401),  # no token
        (outsider, url, 404),  # not a member of its project: as a dataset that does not exist
        (admin, f"{API}/datasets/no-such-dataset/export", 404),
        (admin, f"{url}?include=bogus", 422),
    ):
        refused, refused_head = who.get(asked), who.head(asked)
        assert refused.status_code == refused_head.status_code == status, (asked, status, refused_head.status_code)
        assert refused_head.content == b"" and refused_head.headers["content-type"] == "application/json"
    assert read == [], "a HEAD read the export's rows"


def test_a_body_that_cannot_be_read_is_named_as_the_body(annotator, example_dataset) -> None:
    """Invalid UTF-8, a gzip-encoded body or nesting past what JSON reading allows answered 400 without a field
    ('There was an error parsing the body'); a JSON object sent form-encoded (curl -d's default) was told 'Input
    should be a valid dictionary' (an attacker's finds)."""
    import gzip

    url = f"{API}/augment"
    body = json.dumps({"dataset": example_dataset, "methods": ["wordnet"], "sample_ids": [1]}).encode()
    for data, headers in (
        (b'{"dataset": "caf\xc3"}', {"content-type": "application/json"}),
        (gzip.compress(body), {"content-type": "application/json", "content-encoding": "gzip"}),
        (b"[" * 2000 + b"]" * 2000, {"content-type": "application/json"}),
    ):
        r = annotator.post(url, content=data, headers=headers)
        assert r.status_code in (400, 422) and r.json()["field"] == "body", (data[:20], r.status_code, r.text)
    form = annotator.post(url, content=body, headers={"content-type": "application/x-www-form-urlencoded"})
    assert form.status_code == 422 and form.json()["field"] == "body", form.text
    assert "Content-Type: application/json" in form.json()["detail"], form.text
