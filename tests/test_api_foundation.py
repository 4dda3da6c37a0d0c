"""The API through HTTP with real tokens: auth and roles, import, stats, export, jobs."""

from __future__ import annotations

import csv
import io
import json

import pytest

from tests.conftest import EXAMPLE_CSV

API = "/api/v1"
TASKS = {"task": ["bias", "message", "audience"]}


def upload(client, name="psm", data: bytes | None = None, filename="psm.csv", **form):
    data = EXAMPLE_CSV.read_bytes() if data is None else data
    return client.post(f"{API}/datasets/{name}/import", files={"file": (filename, data)}, data={**TASKS, **form})


def test_healthz_needs_no_token(client):
    assert client.get("/healthz").json() == {"status": "ok"}


@pytest.mark.parametrize("header", [None, "Bearer nope", "Basic abc", "Bearer "])
def test_missing_or_wrong_token_is_401(client, header):
    headers = {"Authorization": header} if header else {}
    r = client.get(f"{API}/datasets", headers=headers)
    assert r.status_code in (401, 403) and "detail" in r.json()
    assert r.status_code == 401 or header == "Basic abc"


def test_revoked_and_expired_tokens_are_refused(client, engine):
    from datetime import timedelta

    from db.auth import create_token, revoke_token
    from db.models import utcnow
    from db.session import session_scope

    with session_scope(engine) as s:
        issued = create_token(s, "carol", "annotator")
        expired = create_token(s, "dave", "annotator", expires_at=utcnow() - timedelta(seconds=1)).token
    ok = {"Authorization": f"Bearer {issued.token}"}
    assert client.get(f"{API}/me", headers=ok).json()["name"] == "carol"
    with session_scope(engine) as s:
        revoke_token(s, issued.token_id)
    assert client.get(f"{API}/me", headers=ok).status_code == 401
    assert client.get(f"{API}/me", headers={"Authorization": f"Bearer {expired}"}).status_code == 401


def test_tokens_are_stored_hashed(engine, admin_token):
    from sqlalchemy import select

    from db.models import APIToken
    from db.session import session_scope

    with session_scope(engine) as s:
        stored = s.scalars(select(APIToken.token_hash)).all()
    assert admin_token not in stored and len(stored[0]) == 64


def test_failed_authentication_is_rate_limited(client, app):
    app.state.auth_limiter.per_minute = 3
    codes = [client.get(f"{API}/me", headers={"Authorization": "Bearer wrong"}).status_code for _ in range(5)]
    assert codes == [401, 401, 401, 429, 429]


def test_a_query_parameter_the_route_does_not_take_is_answered_after_the_token(client, app):
    """The query check ran before the token's: a wrong token with `?zzz=1` got 422 and the route's parameter
    list, and its failures never counted toward the limit."""
    app.state.auth_limiter.per_minute = 3
    codes = [client.get(f"{API}/jobs?zzz=1", headers={"Authorization": "Bearer wrong"}).status_code for _ in range(5)]
    assert codes == [401, 401, 401, 429, 429]
    assert client.get(f"{API}/jobs?zzz=1").status_code == 429  # the same client, now without a token


def test_annotators_cannot_import_or_manage_tokens(annotator):
    r = upload(annotator)
    assert r.status_code == 403 and "admin" in r.json()["detail"]
    assert annotator.get(f"{API}/tokens").status_code == 403
    assert annotator.delete(f"{API}/datasets/x").status_code == 403


def test_admin_manages_tokens(admin):
    r = admin.post(f"{API}/tokens", json={"name": "erin", "role": "annotator", "expires_in_days": 7})
    assert r.status_code == 201
    for instant in (1e-300, 1e-9, 0.0005):  # a token expired as it was handed out (under a minute)
        r = admin.post(f"{API}/tokens", json={"name": "erin", "role": "annotator", "expires_in_days": instant})
        assert r.status_code == 422 and r.json()["field"] == "expires_in_days", (instant, r.text)
    r = admin.post(f"{API}/tokens", json={"name": "erin", "role": "annotator", "expires_in_days": 7})
    issued = r.json()
    assert admin.get(f"{API}/me", headers={"Authorization": f"Bearer {issued['token']}"}).json()["role"] == "annotator"
    listing = admin.get(f"{API}/tokens").json()
    assert all("token" not in row for row in listing) and any(row["name"] == "erin" for row in listing)
    assert admin.post(f"{API}/tokens/{issued['id']}/revoke").json() == {"revoked": 1}
    assert admin.get(f"{API}/me", headers={"Authorization": f"Bearer {issued['token']}"}).status_code == 401
    bad = admin.post(f"{API}/tokens", json={"name": "x", "role": "superuser"})
    assert bad.status_code == 422 and bad.json()["field"] == "role"


def test_import_stats_and_export_through_http(admin, annotator):
    r = upload(admin)
    assert r.status_code == 201, r.text
    assert r.json()["imported"] == 5000
    assert upload(admin).json()["duplicates_skipped"] == 5000  # a second import adds nothing

    stats = annotator.get(f"{API}/datasets/psm/stats").json()
    message = stats["tasks"]["message"]
    assert message["labels"]["other"]["by_split"] == {"train": 99, "val": 11, "test": 11}
    assert message["labels"]["policy"]["train_original"] == 1129
    assert message["imbalance_ratio"] == pytest.approx(1129 / 99)
    assert stats["totals"]["train"] == {"original": 4000}

    exported = annotator.get(f"{API}/datasets/psm/export", params={"format": "csv"})
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert len(rows) == 5000 and {"bias", "message", "audience", "method", "parent_id"} <= set(rows[0])
    first = rows[0]
    assert first["external_id"] == "psm_766192484" and first["bias"] == "partisan" and first["origin"] == "original"
    jsonl = annotator.get(f"{API}/datasets/psm/export", params={"format": "jsonl"}).text.splitlines()
    assert json.loads(jsonl[0])["text"].startswith("RT @nowthisnews")


def test_import_errors_over_http_name_line_and_field(admin):
    r = upload(admin, data=b"text,bias,message,audience\nok,neutral,policy,national\n,neutral,policy,national\n")
    assert r.status_code == 422
    body = r.json()
    assert body["line"] == 3 and "missing text" in body["detail"] and body["field"] == "file"
    assert admin.get(f"{API}/datasets/psm").status_code == 404
    r = admin.post(f"{API}/datasets/psm/import", files={"file": ("a.csv", b"text\n")}, data={})
    assert r.status_code == 422 and r.json()["field"] == "task"
    r = upload(admin, labels="{not json")
    assert r.status_code == 422 and r.json()["field"] == "labels"
    r = upload(admin, labels='{"bias": ["neutral", "partisan", "neutral"]}')
    assert r.status_code == 422 and r.json()["field"] == "labels" and "more than once" in r.json()["detail"]
    r = upload(admin, task=["bias", "bias"])
    assert r.status_code == 422 and r.json()["field"] == "task" and "declared twice" in r.json()["detail"]
    r = upload(admin, split_column="split")  # mistyped: the split would have been drawn, the file's ignored
    assert r.status_code == 422 and r.json()["field"] == "split_column" and "split_col" in r.json()["detail"]
    # a field sent twice (but `task`) is refused, not read as its last value: a second project, split or file
    small = b"text,bias\nx,neutral\n"
    for route in ("import", "imports"):
        for field, value in (("project", ["a", "b"]), ("split", ["train", "test"])):
            r = admin.post(
                f"{API}/datasets/psm/{route}", files={"file": ("a.csv", small)}, data={"task": "bias", field: value}
            )
            assert r.status_code == 422 and r.json()["field"] == field and "2 times" in r.json()["detail"], r.text
        r = admin.post(
            f"{API}/datasets/psm/{route}",
            files=[("file", ("a.csv", small)), ("file", ("b.csv", small))],
            data={"task": "bias"},
        )
        assert r.status_code == 422 and r.json()["field"] == "file", r.text
    assert admin.get(f"{API}/datasets/psm").status_code == 404
    r = upload(admin, split="val")  # every row's split, beside the file's own split column
    assert r.status_code == 422 and r.json()["field"] == "split" and "split column 'split'" in r.json()["detail"]
    r = upload(admin, data=b"text,bias\nx,neutral\ny,partisan\n", split="validation", task=["bias"])
    assert r.status_code == 201 and r.json()["split_counts"] == {"val": 2}, r.json()
    assert admin.delete(f"{API}/datasets/psm").status_code == 204
    r = admin.post(
        f"{API}/datasets/psm/imports",
        files={"file": ("a.csv", b"text,bias\nx,neutral\n")},
        data={**TASKS, "bogus": "1"},
    )
    assert r.status_code == 422 and r.json()["field"] == "bogus"
    assert admin.get(f"{API}/datasets/psm").status_code == 404


def _multipart(*parts: tuple[bytes, bytes]) -> bytes:
    """A multipart/form-data body (boundary XX) of (Content-Disposition parameters, content) parts, bytes as given."""
    body = b"".join(
        b"--XX\r\nContent-Disposition: form-data; " + head + b"\r\n\r\n" + data + b"\r\n" for head, data in parts
    )
    return body + b"--XX--\r\n"


# What api/json_body.py builds on inside Starlette (private: Request._get_form's multipart branch is copied there,
# and StrictMultiPartParser hooks the parser's callbacks), by the digest of its source in the version it was read
STARLETTE_READ = {
    "Request._get_form": "7d96613dccd7737b",
    "MultiPartParser.__init__": "8942551c3d9d5c18",
    "MultiPartParser.parse": "437d35f5afcb4241",
    "MultiPartParser.on_headers_finished": "10922cc93ae5c5ac",
    "MultiPartParser.on_part_end": "bce2bad784bf697f",
    "MultiPartParser.on_part_begin": "cf0336ca585a6b2e",
    "MultiPartParser.on_part_data": "d90fdafc27b56c7d",
    "MultiPartParser.on_header_end": "d59c2e89d4ec3753",
    "MultipartPart": "16ceb42de3d24121",
    "Request.form": "e18549ecc0ecdee3",
}


def test_starlettes_form_reading_is_the_one_the_strict_reader_was_written_against():
    """A Starlette upgrade that changes what api/json_body.py copies or hooks (a new limit on forms, a security
    fix in the parser) would pass the form tests and be skipped in silence: this says to read it again, then
    update the digests."""
    import hashlib
    import inspect

    import starlette.formparsers
    import starlette.requests

    owners = {
        "Request": starlette.requests.Request,
        "MultiPartParser": starlette.formparsers.MultiPartParser,
        "MultipartPart": starlette.formparsers.MultipartPart,
    }
    now = {}
    for name in STARLETTE_READ:
        owner, _, attribute = name.partition(".")
        source = inspect.getsource(getattr(owners[owner], attribute) if attribute else owners[owner])
        now[name] = hashlib.sha256(source.encode()).hexdigest()[:16]
    assert now == STARLETTE_READ, "Starlette changed what api/json_body.py copies or hooks: read it again"


def test_a_form_field_that_is_not_utf8_is_refused_naming_it(admin):
    """Starlette read a form field that is not UTF-8 as Latin-1, unsaid: `task` sent as Latin-1 "bi\\xe9s" became
    "biés" and imported the file's UTF-8 column of that name (an import job queued it the same)."""
    csv_file = (b'name="file"; filename="a.csv"', "text,biés\nx,neutral\n".encode())
    headers = {"content-type": "multipart/form-data; boundary=XX"}
    for route in ("import", "imports"):
        for parts, field, what in (
            ([(b'name="task"', b"bi\xe9s"), csv_file], "task", "value"),
            (
                [(b'name="task"', "biés".encode()), (b'name="file"; filename="\xe9.csv"', b"text,bi\n")],
                "file",
                "file name",
            ),
            ([(b'name="task"', "biés".encode()), (b'name="t\xe9xt_col"', b"text"), csv_file], "t\ufffdxt_col", "name"),
        ):
            r = admin.post(f"{API}/datasets/psm/{route}", content=_multipart(*parts), headers=headers)
            assert r.status_code == 422 and r.json()["field"] == field, (route, r.text)
            assert f"its {what} is not valid utf-8 (byte 0xe9" in r.json()["detail"], r.text
    assert admin.get(f"{API}/datasets/psm").status_code == 404
    assert admin.get(f"{API}/jobs").json()["total"] == 0
    r = admin.post(
        f"{API}/datasets/psm/import", content=_multipart((b'name="task"', "biés".encode()), csv_file), headers=headers
    )
    assert r.status_code == 201 and r.json()["imported"] == 1, r.text


def test_a_form_naming_a_charset_this_server_does_not_know_is_refused(admin) -> None:
    """Starlette read a form whose charset it does not know as Latin-1, so `; charset=x` let a Latin-1 `task`
    (bi\\xe9s) through as "biés" again, matching the file's UTF-8 column; a codec that is no text encoding (rot13)
    was told its body was not UTF-8 JSON (an attacker's find)."""
    csv_file = (b'name="file"; filename="a.csv"', "text,biés\nx,neutral\n".encode())
    for charset in ("bogus", "rot13", "base64"):
        r = admin.post(
            f"{API}/datasets/psm/import",
            content=_multipart((b'name="task"', b"bi\xe9s"), csv_file),
            headers={"content-type": f"multipart/form-data; boundary=XX; charset={charset}"},
        )
        assert r.status_code == 422 and r.json()["field"] == "charset", (charset, r.text)
        assert f"charset '{charset}' is not a text encoding" in r.json()["detail"], r.text
    assert admin.get(f"{API}/datasets/psm").status_code == 404
    r = admin.post(  # a charset it knows is read as said
        f"{API}/datasets/psm/import",
        content=_multipart((b'name="task"', b"bi\xe9s"), csv_file),
        headers={"content-type": "multipart/form-data; boundary=XX; charset=ISO-8859-1"},
    )
    assert r.status_code == 201, r.text


def test_oversize_body_is_413(settings, engine, admin_token):
    from fastapi.testclient import TestClient

    from api.main import create_app

    small = create_app(settings.model_copy(update={"max_request_bytes": 10_000}), engine)
    with TestClient(small, headers={"Authorization": f"Bearer {admin_token}"}) as c:
        r = upload(c, data=b"x" * 20_000)
        assert r.status_code == 413 and "exceeds" in r.json()["detail"]
        head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\n\r\n'
        chunks = iter([head] + [b"y" * 1000] * 20)  # chunked, no Content-Length: caught while streaming
        r = c.post(
            f"{API}/datasets/psm/import", content=chunks, headers={"Content-Type": "multipart/form-data; boundary=b"}
        )
        assert r.status_code == 413
        assert c.get(f"{API}/datasets").json() == []


def test_the_middlewares_refusals_carry_cors_headers(settings, engine, admin_token):
    """A browser on an allowed origin reads a refusal's JSON only when the response carries CORS headers: the
    413 of an oversize body and the 422 of a NUL come from middlewares, so CORS must wrap them."""
    from fastapi.testclient import TestClient

    from api.main import create_app

    origin = "https://annotate.example.org"
    app = create_app(settings.model_copy(update={"max_request_bytes": 10_000, "cors_origins": [origin]}), engine)
    with TestClient(app, headers={"Authorization": f"Bearer {admin_token}", "Origin": origin}) as c:
        refusals = [
            upload(c, data=b"x" * 20_000),
            c.get(f"{API}/datasets/psm/review-queue", params={"q": "\x00"}),
            c.get(f"{API}/datasets"),  # and an ordinary answer, as before
        ]
    assert [r.status_code for r in refusals] == [413, 422, 200]
    assert all(r.headers.get("access-control-allow-origin") == origin for r in refusals)


def test_unknown_things_are_404_and_validation_is_422(annotator, admin):
    assert annotator.get(f"{API}/datasets/nope/stats").json() == {"detail": "dataset 'nope' not found", "field": "name"}
    assert annotator.get(f"{API}/jobs/999").status_code == 404
    r = annotator.get(f"{API}/jobs", params={"limit": 0})
    assert r.status_code == 422 and r.json()["field"] == "limit"
    upload(admin)
    r = annotator.get(f"{API}/datasets/psm/export", params={"include": "original,bogus"})
    assert r.status_code == 422 and r.json()["field"] == "include"


BIG = 2**63  # one past the largest integer SQLite and Postgres hold


@pytest.mark.parametrize(
    ("method", "url", "payload", "field"),
    [
        ("GET", "/datasets/psm/review-queue", {"page": 2**62}, "page"),
        ("GET", "/datasets/psm/review-queue", {"parent_id": BIG}, "parent_id"),
        ("GET", "/datasets/psm/review-queue", {"job_id": BIG}, "job_id"),
        ("GET", "/jobs", {"offset": BIG}, "offset"),
        ("GET", "/training-runs", {"offset": BIG}, "offset"),
        ("GET", "/datasets/psm/impact-reports", {"offset": BIG}, "offset"),
        ("POST", "/datasets/psm/bulk-decisions", {"decision": "approve", "sample_ids": [1, BIG]}, "sample_ids.1"),
        ("POST", "/datasets/psm/bulk-decisions", {"decision": "approve", "parent_id": BIG}, "parent_id"),
        ("POST", "/datasets/psm/bulk-decisions", {"decision": "approve", "filter": {"job_id": BIG}}, "filter.job_id"),
        ("PATCH", "/datasets/psm/variant-settings", {"label_model_id": BIG}, "label_model_id"),
    ],
)
def test_a_number_past_the_databases_integers_is_refused_naming_its_field(admin, method, url, payload, field):
    upload(admin)
    if method == "GET":
        r = admin.get(f"{API}{url}", params=payload)
    else:
        r = admin.request(method, f"{API}{url}", json=payload)
    assert r.status_code == 422 and r.json()["field"] == field, r.text


def test_a_bulk_decision_on_a_missing_family_names_parent_id(admin):
    upload(admin)
    r = admin.post(f"{API}/datasets/psm/bulk-decisions", json={"decision": "approve", "parent_id": 10**9})
    assert r.status_code == 404 and r.json()["field"] == "parent_id", r.text


def test_export_job_runs_on_a_worker_and_serves_its_file(admin, engine, monkeypatch):
    import starlette.responses

    from workers.main import Worker

    upload(admin)
    r = admin.post(f"{API}/datasets/psm/exports", json={"format": "jsonl"})
    assert r.status_code == 202 and r.json()["status"] == "queued"
    job_id = r.json()["id"]
    # Not yet: 409 (the same request later), not 404 (it will exist)
    early = admin.get(f"{API}/jobs/{job_id}/artifact")
    assert early.status_code == 409 and "no artifact yet (status queued)" in early.json()["detail"], early.text
    Worker(engine, ["export"]).run(burst=True)
    job = admin.get(f"{API}/jobs/{job_id}").json()
    assert job["status"] == "succeeded" and job["progress_done"] == job["progress_total"] == 5000
    assert job["result"]["path"] == f"exports/job{job_id}.jsonl", "inside the data directory, not the server's path"
    artifact = admin.get(f"{API}/jobs/{job_id}/artifact")
    assert artifact.status_code == 200 and len(artifact.text.splitlines()) == 5000
    # HEAD: the GET's headers, the file not read (it was read whole for the body to be dropped)
    opened: list[object] = []
    real_open = starlette.responses.anyio.open_file
    monkeypatch.setattr(starlette.responses.anyio, "open_file", lambda *a, **k: opened.append(a) or real_open(*a, **k))
    head = admin.head(f"{API}/jobs/{job_id}/artifact")
    shown = ("content-type", "content-length", "content-disposition", "etag", "last-modified")
    assert head.status_code == 200 and head.content == b"", head.text
    assert {k: head.headers.get(k) for k in shown} == {k: artifact.headers.get(k) for k in shown}, head.headers
    assert opened == [], "a HEAD read the file"
    listing = admin.get(f"{API}/jobs", params={"dataset": "psm", "status": "succeeded"}).json()
    assert listing["total"] == 1 and listing["items"][0]["id"] == job_id


def test_cancel_a_queued_job(admin):
    upload(admin)
    job_id = admin.post(f"{API}/datasets/psm/exports", json={}).json()["id"]
    assert admin.post(f"{API}/jobs/{job_id}/cancel").json()["status"] == "cancelled"
    assert admin.post(f"{API}/jobs/{job_id}/cancel").status_code == 409


def test_cancelling_a_job_whose_worker_died_answers_as_get_does(admin, engine):
    """The cancel answered the job's row as it was, `worker_silent: false` for a running job whose worker is dead,
    while `GET /jobs/{id}` said true: the request is recorded but no one will hear it (the queue ends it when a
    worker or the CLI next looks for work). Both answer through the same view, by the database's clock."""
    from datetime import timedelta

    from sqlalchemy import update

    from db import queue
    from db.models import Job
    from db.session import session_scope

    upload(admin)
    job_id = admin.post(f"{API}/datasets/psm/exports", json={}).json()["id"]
    assert queue.claim(engine, "killed", ["export"], lease_seconds=60).id == job_id
    with session_scope(engine) as s:  # the worker was killed: its lease ran out
        s.execute(update(Job).where(Job.id == job_id).values(lease_until=queue.db_now(s) - timedelta(seconds=5)))
    assert admin.get(f"{API}/jobs/{job_id}").json()["worker_silent"] is True
    cancelled = admin.post(f"{API}/jobs/{job_id}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "running" and cancelled.json()["cancel_requested"] is True
    assert cancelled.json()["worker_silent"] is True, "the cancel's answer hid that no worker will hear it"
    assert cancelled.json() == admin.get(f"{API}/jobs/{job_id}").json()


def test_dataset_settings_and_delete(admin, annotator):
    upload(admin)
    r = admin.patch(f"{API}/datasets/psm", json={"reviews_required": 3, "guidelines": "Keep the stance."})
    assert r.json()["reviews_required"] == 3
    assert annotator.patch(f"{API}/datasets/psm", json={"reviews_required": 1}).status_code == 403
    assert admin.patch(f"{API}/datasets/psm", json={"reviews_required": 0}).status_code == 422
    assert admin.delete(f"{API}/datasets/psm").status_code == 204
    assert admin.get(f"{API}/datasets").json() == []


def test_deleting_a_dataset_deletes_its_files_once_the_deletion_commits(admin, engine, settings):
    """A deleted dataset's runs (their folders, checkpoints and unfinished attempts, which hold its texts), export
    files and queued uploads go with it; another dataset's stay, and a deletion that rolls back deletes nothing."""
    import pytest

    from db.models import Dataset, TrainingRun
    from db.session import session_scope
    from services.datasets import remove
    from services.training import runs_root
    from workers.main import Worker

    small = (
        b"text,bias,message,audience\n"
        b"We passed the farm bill,partisan,policy,national\nHappy new year,neutral,personal,national\n"
    )
    files: dict[str, list] = {}
    for name in ("gone", "kept"):
        assert upload(admin, name=name, data=small).status_code == 201
        export = admin.post(f"{API}/datasets/{name}/exports", json={"format": "csv"}).json()["id"]
        Worker(engine, ["export"]).run(burst=True)
        queued = admin.post(
            f"{API}/datasets/{name}/imports", data=TASKS, files={"file": ("more.csv", small.replace(b"We", b"They"))}
        )
        assert queued.status_code == 202
        with session_scope(engine) as s:
            dataset_id = s.query(Dataset.id).filter_by(name=name).scalar()
            run = TrainingRun(dataset_id=dataset_id, name="r")
            s.add(run)
            s.flush()
            run_id = run.id
        run_files = [
            runs_root() / str(run_id),
            runs_root() / f"{run_id}.checkpoint",
            runs_root() / f"{run_id}.partial-ab12",
        ]
        for folder in run_files:
            (folder / "model").mkdir(parents=True)
            (folder / "model" / "weights.bin").write_bytes(b"w")
        upload_file = settings.data_dir / "imports" / queued.json()["params"]["upload"]
        files[name] = [*run_files, settings.data_dir / "exports" / f"job{export}.csv", upload_file]
        assert all(path.exists() for path in files[name])

    with pytest.raises(RuntimeError), session_scope(engine) as s:
        remove(s, "gone")
        raise RuntimeError("the deletion does not commit")
    assert all(path.exists() for path in files["gone"]), "a deletion that rolled back keeps every file"

    assert admin.delete(f"{API}/datasets/gone").status_code == 204
    assert [path for path in files["gone"] if path.exists()] == []
    assert all(path.exists() for path in files["kept"])


def test_openapi_docs_are_served(client):
    assert client.get("/docs").status_code == 200
    assert "/api/v1/datasets/{name}/import" in client.get("/openapi.json").json()["paths"]


def test_every_request_body_refuses_unknown_keys_and_nan(admin):
    """An unknown key is a typo to report, not to drop; NaN (which Python's JSON reader accepts, as it does
    Infinity and 1e309) compares false with every bound, so an unbounded filter used to take it silently."""
    spec = admin.get("/openapi.json").json()
    bodies = [
        op["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
        for methods in spec["paths"].values()
        for op in methods.values()
        if "application/json" in op.get("requestBody", {}).get("content", {})
    ]
    assert len(bodies) >= 10
    for name in bodies:
        assert spec["components"]["schemas"][name]["additionalProperties"] is False, name

    assert upload(admin).status_code == 201
    r = admin.post(f"{API}/tokens", json={"name": "x", "role": "annotator", "scope": "all"})
    assert r.status_code == 422 and r.json()["field"] == "scope"
    for literal in ("NaN", "Infinity", "1e309"):
        text = '{"decision": "approve", "filter": {"min_similarity": ' + literal + "}}"
        r = admin.post(f"{API}/datasets/psm/bulk-decisions", content=text, headers={"Content-Type": "application/json"})
        assert r.status_code == 422 and r.json()["field"] == "filter.min_similarity", (literal, r.text)
    for value in ("nan", "inf", "-inf"):
        r = admin.get(f"{API}/datasets/psm/review-queue", params={"max_consistency": value})
        assert r.status_code == 422 and r.json()["field"] == "max_consistency", (value, r.text)
    # a key given twice: Python's reader kept the last, a proxy or a log reading the first saw another request
    for text, field in (
        ('{"decision": "approve", "decision": "reject", "reason": "other", "filter": {}}', "decision"),
        ('{"decision": "approve", "filter": {"min_similarity": 0.1, "min_similarity": 0.9}}', "min_similarity"),
    ):
        r = admin.post(f"{API}/datasets/psm/bulk-decisions", content=text, headers={"Content-Type": "application/json"})
        assert r.status_code == 422 and r.json()["field"] == field and "twice" in r.json()["detail"], r.text
    import importlib
    import pkgutil

    import api.routes
    from api.json_body import StrictJSONRoute

    for module in pkgutil.iter_modules(api.routes.__path__):
        router = importlib.import_module(f"api.routes.{module.name}").router
        assert router.routes and all(isinstance(r, StrictJSONRoute) for r in router.routes), module.name


def test_a_flag_where_a_number_belongs_is_refused_naming_the_field(admin, engine):
    """pydantic reads true as 1 where a number belongs: `"reviews_required": true` set k = 1 and
    `"epochs": true` queued a one-epoch run, without a word. Each is refused, naming the field, and nothing is
    stored; a flag where a flag belongs still works."""
    from sqlalchemy import select

    from db.models import Dataset, Job, TrainingRun
    from db.session import session_scope

    assert upload(admin).status_code == 201
    assert admin.patch(f"{API}/datasets/psm", json={"reviews_required": 3}).status_code == 200
    for method, path, body, field in (
        ("patch", "/datasets/psm", {"reviews_required": True}, "reviews_required"),
        ("patch", "/datasets/psm", {"lease_minutes": False}, "lease_minutes"),
        ("post", "/training-runs", {"dataset": "psm", "config": {"epochs": True}}, "config.epochs"),
        (
            "post",
            "/training-runs",
            {"dataset": "psm", "config": {"task_weights": {"bias": True}}},
            "config.task_weights",
        ),
        ("post", "/training-runs", {"dataset": "psm", "seeds": [1, True]}, "seeds"),
        ("patch", "/datasets/psm/variant-settings", {"label_change_confidence": True}, "label_change_confidence"),
        ("post", "/datasets/psm/assignments", {"size": True}, "size"),
    ):
        r = admin.request(method, f"{API}{path}", json=body)
        assert r.status_code == 422 and r.json()["field"] == field, (path, body, r.text)
        assert "not true" in r.json()["detail"] or "not false" in r.json()["detail"], r.text
    with session_scope(engine) as s:
        dataset = s.scalars(select(Dataset).where(Dataset.name == "psm")).one()
        assert dataset.reviews_required == 3 and dataset.lease_minutes != 0
        assert s.scalar(select(Job.id).where(Job.kind == "train")) is None and s.scalar(select(TrainingRun.id)) is None
    r = admin.patch(f"{API}/datasets/psm", json={"distribute_work": True, "reviews_required": 2})
    assert r.status_code == 200 and r.json()["reviews_required"] == 2
    # the other way round: a word or a number where a flag belongs ("off" read as false: an ensemble combined
    # unweighted, "yes" queued a TF-IDF member)
    for method, path, body, field in (
        ("post", "/training-runs", {"dataset": "psm", "classical": "yes"}, "classical"),
        ("post", "/ensembles", {"run_ids": [1, 2], "weighted": "off"}, "weighted"),
        ("post", "/ensembles", {"run_ids": [1, 2], "temperature": 0}, "temperature"),
        ("patch", "/datasets/psm", {"distribute_work": "no"}, "distribute_work"),
        ("patch", "/datasets/psm/variant-settings", {"auto_reject_label_changed": "1"}, "auto_reject_label_changed"),
    ):
        r = admin.request(method, f"{API}{path}", json=body)
        assert r.status_code == 422 and r.json()["field"] == field, (path, body, r.text)
        assert r.json()["detail"] == f"{field}: Input should be true or false", r.text
    with session_scope(engine) as s:
        assert s.scalar(select(TrainingRun.id)) is None
        assert s.scalars(select(Dataset).where(Dataset.name == "psm")).one().distribute_work is True


def test_a_nul_character_anywhere_in_a_request_is_refused_naming_where(admin, engine):
    """No text in augloop may hold a NUL (Postgres refuses one in a text value): a note, a nested config value,
    a dict key, a query parameter or a path is refused with 422 naming where it is, and nothing is stored."""
    from sqlalchemy import func, select

    from db.models import Job, Review
    from db.session import session_scope

    assert upload(admin).status_code == 201
    r = admin.post(
        f"{API}/samples/1/decision", json={"decision": "reject", "version": 1, "reason": "other", "note": "a\x00b"}
    )
    assert r.status_code == 422 and r.json()["field"] == "note", r.text
    r = admin.post(f"{API}/training-runs", json={"dataset": "psm", "config": {"encoder": "bert\x00"}})
    assert r.status_code == 422 and r.json()["field"] == "config", r.text
    assert "at encoder" in r.json()["detail"]
    r = admin.post(f"{API}/datasets/psm/protected-terms", json={"add": ["tax", "wa\x00ter"]})
    assert r.status_code == 422 and r.json()["field"] == "add", r.text
    r = admin.post(
        f"{API}/augment",
        json={"dataset": "psm", "methods": ["wordnet"], "texts": [{"text": "fine", "labels": {"bi\x00as": "x"}}]},
    )
    assert r.status_code == 422 and r.json()["field"] == "texts.0.labels", r.text
    r = admin.get(f"{API}/datasets/psm/review-queue", params={"q": "a\x00"})
    assert r.status_code == 422 and r.json() == {"detail": "q: holds a NUL character", "field": "q"}
    r = admin.get(f"{API}/datasets/ps%00m")
    assert r.status_code == 422 and r.json()["field"] == "path"
    for key in ("path", "query", "body"):  # a body's key of that name is a field, not where the error came from
        r = admin.post(f"{API}/datasets/psm/exports", json={"format": "csv", key: "/etc/passwd"})
        assert r.status_code == 422 and r.json()["field"] == key and r.json()["detail"].startswith(f"{key}: ")
    # an import's form fields: names the field, before the file is read
    refused = [
        ({"project": "a\x00"}, "project"),
        ({"text_col": "te\x00xt"}, "text_col"),
        ({"language": "x" * 17}, "language"),
    ]
    for form, field in refused:
        r = upload(admin, name="other", **form)
        assert r.status_code == 422 and r.json()["field"] == field, (form, r.text)
    assert admin.get(f"{API}/datasets/other").status_code == 404
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(Review)) == 0
        assert s.scalar(select(func.count()).select_from(Job)) == 0
    # a string that merely looks like one is fine
    assert admin.get(f"{API}/datasets/psm/review-queue", params={"q": "\\x00"}).status_code == 200


def test_a_lone_surrogate_is_refused_naming_where_not_a_500(admin, annotator, engine):
    """JSON's \\ud800 escape decodes to half a UTF-16 pair, which no database stores (SQLite's driver raised: a
    plain-text 500). In a body (a search filter any annotator sends, a note), an import's form field, or a JSONL
    import's text, label or id, it is a 422 naming the field or the line."""
    from sqlalchemy import func, select

    from db.models import Sample
    from db.session import session_scope

    assert upload(admin).status_code == 201
    raw = '{"decision": "approve", "filter": {"q": "x\\ud800"}}'  # the escape as a client sends it
    r = annotator.post(f"{API}/datasets/psm/bulk-decisions", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["field"] == "filter.q" and "surrogate" in r.json()["detail"], r.text
    r = admin.post(
        f"{API}/samples/1/decision",
        content='{"decision": "reject", "version": 1, "reason": "other", "note": "a\\udfffb"}',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422 and r.json()["field"] == "note", r.text
    with session_scope(engine) as s:
        before = s.scalar(select(func.count()).select_from(Sample))
    for record, field in (
        ('{"text": "abc \\ud800", "label": "a", "split": "train"}', None),
        ('{"text": "abc", "label": "a\\ud800", "split": "train"}', "task"),
        ('{"id": "\\udfff", "text": "abc", "label": "a", "split": "train"}', "id_col"),
    ):
        body = (record + "\n").encode()
        form = {"task": ["label"], **({"id_col": "id"} if "id" in record else {})}
        r = admin.post(f"{API}/datasets/surrogates/import", files={"file": ("x.jsonl", body)}, data=form)
        assert r.status_code == 422 and "surrogate" in r.json()["detail"], (record, r.text)
        assert field is None or r.json()["field"] == field, r.text
    r = admin.post(
        f"{API}/datasets/deep/import",
        files={"file": ("x.csv", b"text,label,split\nabc,a,train\n")},
        data={"task": ["label"], "labels": "[" * 100_000 + "]" * 100_000},
    )
    assert r.status_code == 422 and r.json()["field"] == "labels", r.text
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(Sample)) == before


def test_openapi_schema_names_the_fields_of_params_filters_and_config_with_their_bounds(client):
    """A client (and schemathesis) sees what `params`, `filters` and `config` take, not an opaque object."""
    from trainer.config import TrainConfig

    schemas = client.get("/openapi.json").json()["components"]["schemas"]

    def resolve(node: dict) -> dict:
        if "anyOf" in node:  # `X | None`
            (node,) = [n for n in node["anyOf"] if n.get("type") != "null"]
        return schemas[node["$ref"].rsplit("/", 1)[1]] if "$ref" in node else node

    for body in ("AugmentCreate", "PlanCreate"):
        params = resolve(schemas[body]["properties"]["params"])
        assert set(params["properties"]) == {"backtranslation", "mlm", "wordnet", "paraphrase"}
        mlm = resolve(params["properties"]["mlm"])
        assert mlm["properties"]["aug_p"] | {"exclusiveMinimum": 0, "maximum": 1} == mlm["properties"]["aug_p"]
        assert mlm["properties"]["top_k"]["minimum"] == 1 and mlm["properties"]["top_k"]["maximum"] == 1000
        wordnet = resolve(params["properties"]["wordnet"])
        assert wordnet["properties"]["max_senses"]["maximum"] == 50
        assert wordnet["properties"]["context"]["enum"] == ["auto", "encoder", "off"]
        paraphrase = resolve(params["properties"]["paraphrase"])
        assert paraphrase["properties"]["max_new_tokens"]["maximum"] == 4096
        bt = resolve(params["properties"]["backtranslation"])
        assert bt["properties"]["decoding"]["enum"] == ["sample", "beam"]
        filters = resolve(schemas[body]["properties"]["filters"])
        assert set(filters["properties"]) == {
            "min_length_ratio",
            "max_length_ratio",
            "leakage_threshold",
            "leakage_containment",
            "leakage_ngram",
            "min_similarity",
            "min_semantic_similarity",
        }
        threshold = filters["properties"]["leakage_threshold"]
        assert threshold["type"] == "number" and threshold["exclusiveMinimum"] == 0 and threshold["maximum"] == 1
        for model in (params, mlm, wordnet, bt, paraphrase, filters):
            assert model["additionalProperties"] is False
    for body in ("TrainingRunCreate", "ImpactReportCreate"):
        config = resolve(schemas[body]["properties"]["config"])
        assert set(config["properties"]) == set(TrainConfig.model_fields)
        assert not config.get("required") and config["additionalProperties"] is False  # all optional overrides
        lr, smoothing = config["properties"]["lr"], config["properties"]["label_smoothing"]
        # null: planned for the run's length (trainer/plan.py); a number: within (0, 1)
        assert {"exclusiveMaximum": 1, "exclusiveMinimum": 0, "type": "number"} in lr["anyOf"]
        assert {"type": "null"} in lr["anyOf"]
        budget = next(b for b in config["properties"]["budget_minutes"]["anyOf"] if b.get("type") == "number")
        assert budget["exclusiveMinimum"] == 0 and budget["maximum"] == 7 * 24 * 60
        assert smoothing["minimum"] == 0 and smoothing["maximum"] == 0.5
        assert config["properties"]["pooling"]["enum"] == ["auto", "last4_mean", "cls", "mean"]
        per_class = config["properties"]["class_label_smoothing"]["additionalProperties"]["additionalProperties"]
        assert per_class["maximum"] == 0.5


def test_a_body_that_is_not_json_or_is_missing_names_the_body(lead):
    r = lead.post(f"{API}/augment", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["field"] == "body" and "not valid JSON" in r.json()["detail"]
    r = lead.post(f"{API}/samples/1/undo")
    assert r.status_code == 422 and r.json()["field"] == "body" and "JSON body" in r.json()["detail"]


@pytest.mark.parametrize(
    ("sqlstate", "said"),
    [
        ("22001", "a text is longer than the database holds"),
        ("22003", "a number is out of range for the database"),
        ("22P02", "a value the database cannot store"),
    ],
)
def test_a_database_data_error_is_a_422_in_the_apis_words(app, sqlstate: str, said: str) -> None:
    """Postgres's own words (they may quote the value, and its types) stay in the server's log, as the README
    says of the database's messages; the client gets what kind of value did not fit."""
    from fastapi.testclient import TestClient
    from sqlalchemy.exc import DataError

    class Orig(Exception):
        pass

    orig = Orig('value too long for type character varying(200): "secret-value"')
    orig.sqlstate = sqlstate  # type: ignore[attr-defined]

    def fails() -> None:
        raise DataError("INSERT INTO x VALUES (%s)", {"v": "secret-value"}, orig)

    app.add_api_route("/test-data-error", fails, include_in_schema=False)
    r = TestClient(app).get("/test-data-error")
    assert r.status_code == 422 and r.json()["detail"] == said
    assert "secret" not in r.text and "varying" not in r.text


def test_an_error_repeats_at_most_a_bounded_part_of_the_request(admin):
    """A 60,000-character query value, dataset name or body key came back whole in the error's body."""
    long = "x" * 60_000
    for r in (
        admin.get(f"{API}/jobs", params={"status": long}),
        admin.get(f"{API}/datasets/{long}"),
        admin.post(f"{API}/tokens", json={"name": "ok", "role": "annotator", long: 1}),
        admin.post(f"{API}/tokens", json={"name": "ok", "role": long}),
    ):
        assert r.status_code in (404, 422) and len(r.content) < 6_000, (r.status_code, len(r.content))
        assert len(r.json()["detail"]) <= 2_000 and len(r.json().get("field") or "") <= 200
