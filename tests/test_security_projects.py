"""The role table with projects: every OpenAPI operation × {admin, lead of A, annotator of A, annotator of B
only, a user of no project}, on a dataset of project A and the things under it (samples, jobs, runs, reports).

- to a non-member, a dataset and everything in it do not exist: 404, the answer a missing one gets;
- an annotator of A reads and reviews, and gets 403 on what needs the lead role;
- a lead of A and an admin are never refused (their answer may still be 409/422: the request itself);
- the global admin-only operations answer 403 to everyone else;
- the operations that are not about one dataset (lists, who am I) answer everyone, with only their own things.

Every operation of the app must be classified below: a new route fails `test_every_operation_is_classified`
until it is added to one of the sets.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.conftest import _issue
from tests.review_fixtures import add_variant

PUBLIC = {("GET", "/healthz")}

ADMIN_ONLY = {
    ("POST", "/api/v1/datasets/{name}/import"),
    ("POST", "/api/v1/datasets/{name}/imports"),
    ("DELETE", "/api/v1/datasets/{name}"),
    ("POST", "/api/v1/datasets/{name}/label-renames"),
    ("GET", "/api/v1/tokens"),
    ("POST", "/api/v1/tokens"),
    ("POST", "/api/v1/tokens/{token_id}/revoke"),
    ("GET", "/api/v1/workers"),
    ("PATCH", "/api/v1/users/{name}"),
    ("POST", "/api/v1/projects"),
    ("GET", "/api/v1/projects/{name}/members"),
    ("PUT", "/api/v1/projects/{name}/members"),
    ("DELETE", "/api/v1/projects/{name}/members/{user}"),
}

# The project's leads (and admins): settings, guidelines, augmentation, training, label models, cancelling.
LEAD_ONLY = {
    ("PATCH", "/api/v1/datasets/{name}"),
    ("POST", "/api/v1/jobs/{job_id}/cancel"),
    ("POST", "/api/v1/datasets/{name}/label-model"),
    ("POST", "/api/v1/training-runs"),
    ("POST", "/api/v1/ensembles"),
    ("POST", "/api/v1/datasets/{name}/pseudo-labels"),
    ("POST", "/api/v1/augment"),
    ("POST", "/api/v1/datasets/{name}/augmentation-plans"),
    ("POST", "/api/v1/datasets/{name}/impact-reports"),
    ("POST", "/api/v1/datasets/{name}/protected-terms"),
    ("POST", "/api/v1/datasets/{name}/protected-terms/seed"),
    ("PATCH", "/api/v1/datasets/{name}/variant-settings"),
    ("PUT", "/api/v1/datasets/{name}/auto-approval"),
    ("POST", "/api/v1/datasets/{name}/auto-approval/apply"),
}

# Any member of the dataset's project: reading, exporting, reviewing, statistics, jobs and runs.
MEMBER = {
    ("GET", "/api/v1/datasets/{name}"),
    ("GET", "/api/v1/datasets/{name}/stats"),
    ("GET", "/api/v1/datasets/{name}/export"),
    ("POST", "/api/v1/datasets/{name}/exports"),
    ("GET", "/api/v1/jobs/{job_id}"),
    ("GET", "/api/v1/jobs/{job_id}/artifact"),
    ("GET", "/api/v1/datasets/{name}/review-queue"),
    ("GET", "/api/v1/samples/{sample_id}"),
    ("POST", "/api/v1/samples/{sample_id}/decision"),
    ("POST", "/api/v1/samples/{sample_id}/undo"),
    ("POST", "/api/v1/datasets/{name}/bulk-decisions"),
    ("GET", "/api/v1/datasets/{name}/agreement"),
    ("GET", "/api/v1/datasets/{name}/review-progress"),
    ("POST", "/api/v1/datasets/{name}/assignments"),
    ("DELETE", "/api/v1/datasets/{name}/assignments"),
    ("POST", "/api/v1/datasets/{name}/assignments/renew"),
    ("GET", "/api/v1/datasets/{name}/annotators"),
    ("GET", "/api/v1/datasets/{name}/label-model"),
    ("GET", "/api/v1/datasets/{name}/my-latest-decision"),
    ("POST", "/api/v1/training-estimates"),
    ("GET", "/api/v1/training-runs/{run_id}"),
    ("GET", "/api/v1/training-runs/{run_id}/snapshot"),
    ("POST", "/api/v1/models/{model_id}/predict"),
    ("GET", "/api/v1/datasets/{name}/augmentation-plans"),
    ("GET", "/api/v1/datasets/{name}/augmenters"),
    ("GET", "/api/v1/datasets/{name}/impact-reports"),
    ("POST", "/api/v1/datasets/{name}/impact-estimates"),
    ("GET", "/api/v1/impact-reports/{report_id}"),
    ("GET", "/api/v1/datasets/{name}/protected-terms"),
    ("GET", "/api/v1/datasets/{name}/variant-settings"),
    ("GET", "/api/v1/datasets/{name}/auto-approval"),
}

# Not about one dataset: everyone signed in, each seeing only their own projects' things (checked below).
ANY_USER = {
    ("GET", "/api/v1/me"),
    ("GET", "/api/v1/projects"),
    ("GET", "/api/v1/datasets"),
    ("GET", "/api/v1/jobs"),
    ("GET", "/api/v1/training-runs"),
    ("GET", "/api/v1/review-cards"),
}

CALLERS = ("nobody", "outsider", "annotator", "lead", "admin")  # the order each operation is called in


def operations(app) -> list[tuple[str, str]]:
    ops = sorted((m.upper(), p) for p, methods in app.openapi()["paths"].items() for m in methods)
    # deleting the dataset goes last: every other operation needs it
    return sorted(ops, key=lambda op: op == ("DELETE", "/api/v1/datasets/{name}"))


@pytest.fixture
def world(settings, engine, example_dataset, admin_token) -> dict[str, Any]:
    """Project A ("default", where psm is) with a lead and an annotator; project B with its own annotator and
    dataset; a user of no project; a variant, a finished export job, a queued job, two runs and a report in
    psm; a spare user for the admin operations that change people."""
    from db import impact_reports as db_reports
    from db import queue
    from db.datasets import get_dataset
    from db.models import APIToken, Job, Sample, User
    from db.session import session_scope
    from services import projects
    from services.training import create_training_runs, default_config
    from tests.conftest import join_project

    tokens = {
        "admin": admin_token,
        "lead": _issue(engine, "lena-lead", "annotator", project_role="lead"),
        "annotator": _issue(engine, "anna-a", "annotator"),
        "outsider": _issue(engine, "otto-b", "annotator", project_role=None),
        "nobody": _issue(engine, "nina-none", "annotator", project_role=None),
    }
    _issue(engine, "spare-user", "annotator")
    with session_scope(engine) as s:
        projects.create(s, "team-b")
        join_project(s, "otto-b", "team-b", "annotator")
        dataset = get_dataset(s, example_dataset)
        source = s.query(Sample).filter(Sample.dataset_id == dataset.id, Sample.split == "train").first()
        variant = add_variant(s, source.id, "a reworded text about policy", method="wordnet")
        done = queue.enqueue(
            s, "export", {"dataset": dataset.name, "format": "csv", "include": "original"}, dataset_id=dataset.id
        )
        queued = queue.enqueue(
            s, "export", {"dataset": dataset.name, "format": "csv", "include": "original"}, dataset_id=dataset.id
        )
        runs = create_training_runs(s, dataset, default_config({}), [1, 2])
        report = db_reports.create_report(s, dataset, {"seeds": [1], "methods": ["wordnet"]}, None)
        ids = {
            "variant": variant,
            "done": done.id,
            "queued": queued.id,
            "runs": [r.id for r in runs],
            "report": report.id,
        }
    artifact = settings.data_dir / "exports" / f"job{ids['done']}.csv"
    artifact.parent.mkdir(exist_ok=True)
    artifact.write_text("id,text\n", encoding="utf-8")
    with session_scope(engine) as s:
        job = s.get(Job, ids["done"])
        job.status, job.result = "succeeded", {"path": str(artifact)}
        spare_token_id = s.scalar(select(APIToken.id).join(User).where(User.name == "spare-user"))
    return {"tokens": tokens, "spare_token_id": spare_token_id, **ids}


def path_for(method: str, path: str, world: dict[str, Any]) -> str:
    values = {
        "name": "psm",
        "sample_id": world["variant"],
        "run_id": world["runs"][0],
        "model_id": world["runs"][0],
        "report_id": world["report"],
        "token_id": world["spare_token_id"],
        "user": "spare-user",
        "job_id": world["queued"] if path.endswith("/cancel") else world["done"],
    }
    if path.startswith("/api/v1/projects/"):
        values["name"] = "default"
    if path == "/api/v1/users/{name}":
        values["name"] = "spare-user"
    if path.endswith(("/import", "/imports")):
        values["name"] = "new-" + ("now" if path.endswith("/import") else "job")
    return re.sub(r"\{([^}]+)\}", lambda m: str(values[m.group(1)]), path)


def request_for(method: str, path: str, world: dict[str, Any], version: int) -> dict[str, Any]:
    """The smallest valid request for each operation with a body (and the query some GETs need)."""
    run, other = world["runs"]
    bodies: dict[tuple[str, str], Any] = {
        ("POST", "/api/v1/projects"): {"name": "made-by-test"},
        ("PUT", "/api/v1/projects/{name}/members"): {"user": "spare-user", "role": "annotator"},
        ("PATCH", "/api/v1/datasets/{name}"): {"guidelines": "Keep the label."},
        ("POST", "/api/v1/datasets/{name}/exports"): {"format": "csv"},
        ("POST", "/api/v1/tokens"): {"name": "new-person", "role": "annotator"},
        ("PATCH", "/api/v1/users/{name}"): {"role": "annotator"},
        ("POST", "/api/v1/samples/{sample_id}/decision"): {"decision": "approve", "version": version},
        ("POST", "/api/v1/samples/{sample_id}/undo"): {"version": version},
        ("POST", "/api/v1/datasets/{name}/bulk-decisions"): {"decision": "approve", "sample_ids": [world["variant"]]},
        ("POST", "/api/v1/datasets/{name}/assignments"): {},
        ("POST", "/api/v1/datasets/{name}/label-model"): {"model_id": run},
        ("POST", "/api/v1/training-runs"): {"dataset": "psm", "seeds": [3]},
        ("POST", "/api/v1/training-estimates"): {"dataset": "psm", "seeds": [3]},
        ("POST", "/api/v1/ensembles"): {"run_ids": [run, other]},
        ("POST", "/api/v1/models/{model_id}/predict"): {"texts": ["a text"]},
        ("POST", "/api/v1/datasets/{name}/pseudo-labels"): {"model_id": run},
        ("POST", "/api/v1/augment"): {
            "dataset": "psm",
            "texts": [
                {"text": "a new text", "labels": {"bias": "neutral", "message": "policy", "audience": "national"}}
            ],
        },
        ("POST", "/api/v1/datasets/{name}/augmentation-plans"): {},
        ("POST", "/api/v1/datasets/{name}/impact-reports"): {"seeds": [1]},
        ("POST", "/api/v1/datasets/{name}/impact-estimates"): {"seeds": [1]},
        ("POST", "/api/v1/datasets/{name}/protected-terms"): {"add": ["senate"]},
        ("POST", "/api/v1/datasets/{name}/protected-terms/seed"): {},
        ("PATCH", "/api/v1/datasets/{name}/variant-settings"): {"auto_reject_label_changed": False},
        ("PUT", "/api/v1/datasets/{name}/auto-approval"): {"enabled": False},
        ("POST", "/api/v1/datasets/{name}/label-renames"): {"task": "audience", "label": "national", "to": "country"},
    }
    if (method, path) in bodies:
        return {"json": bodies[(method, path)]}
    if path.endswith(("/import", "/imports")):
        return {
            "files": {"file": ("x.csv", b"text,label\nfirst text,a\nsecond text,b\n", "text/csv")},
            "data": {"task": "label"},
        }
    if path == "/api/v1/review-cards":
        return {"params": {"ids": str(world["variant"])}}
    if method in ("POST", "PATCH", "PUT"):
        return {"json": {}}
    return {}


def expected(op: tuple[str, str], who: str, code: int) -> bool:
    if code >= 500 or code == 401:
        return False
    if op in PUBLIC or op in ANY_USER:
        return code not in (403, 404)
    if op in ADMIN_ONLY:
        return code == 403 if who != "admin" else code not in (403, 404)
    if who in ("nobody", "outsider"):
        return code == 404
    if who == "annotator" and op in LEAD_ONLY:
        return code == 403
    return code not in (403, 404)


def test_every_operation_is_classified(app) -> None:
    classified = PUBLIC | ADMIN_ONLY | LEAD_ONLY | MEMBER | ANY_USER
    ops = set(operations(app))
    assert ops <= classified, f"classify these operations in tests/test_security_projects.py: {ops - classified}"
    assert classified <= ops, f"no longer served: {classified - ops}"
    sets = [PUBLIC, ADMIN_ONLY, LEAD_ONLY, MEMBER, ANY_USER]
    assert sum(len(s) for s in sets) == len(classified), "an operation is in two sets"


def test_every_operation_by_project_membership(app, engine, world) -> None:
    from db.models import Sample
    from db.session import session_scope

    clients = {
        who: TestClient(app, headers={"Authorization": f"Bearer {token}"}) for who, token in world["tokens"].items()
    }
    problems = []
    for method, path in operations(app):
        for who in CALLERS:
            with session_scope(engine) as s:
                version = s.get(Sample, world["variant"]).version
            response = clients[who].request(
                method, path_for(method, path, world), **request_for(method, path, world, version)
            )
            if not expected((method, path), who, response.status_code):
                problems.append(f"{method} {path} as {who}: {response.status_code} {response.text[:160]}")
    assert not problems, "\n".join(problems)


def test_lists_show_only_the_callers_projects(app, world) -> None:
    """Outside project A, its dataset, jobs, runs, variants and projects are absent from every list."""
    outsider = TestClient(app, headers={"Authorization": f"Bearer {world['tokens']['outsider']}"})
    member = TestClient(app, headers={"Authorization": f"Bearer {world['tokens']['annotator']}"})
    assert [d["name"] for d in outsider.get("/api/v1/datasets").json()] == []
    assert [p["name"] for p in outsider.get("/api/v1/projects").json()] == ["team-b"]
    assert outsider.get("/api/v1/jobs").json()["total"] == 0
    assert outsider.get("/api/v1/training-runs").json() == []
    assert outsider.get("/api/v1/review-cards", params={"ids": str(world["variant"])}).json() == []
    assert outsider.get("/api/v1/jobs", params={"dataset": "psm"}).status_code == 404
    assert outsider.get("/api/v1/training-runs", params={"dataset": "psm"}).status_code == 404
    # …while a member sees them all
    assert [d["name"] for d in member.get("/api/v1/datasets").json()] == ["psm"]
    assert member.get("/api/v1/jobs").json()["total"] == 2
    assert len(member.get("/api/v1/training-runs").json()) == 2
    assert [c["id"] for c in member.get("/api/v1/review-cards", params={"ids": str(world["variant"])}).json()] == [
        world["variant"]
    ]


def test_a_non_member_gets_the_answer_of_a_missing_dataset(app, world) -> None:
    """The 404 body is the same as for a name that does not exist: nothing tells the dataset exists."""
    outsider = TestClient(app, headers={"Authorization": f"Bearer {world['tokens']['outsider']}"})
    for hidden_url, missing_url in [
        ("/api/v1/datasets/psm/export", "/api/v1/datasets/no-such-dataset/export"),
        ("/api/v1/jobs?dataset=psm", "/api/v1/jobs?dataset=no-such-dataset"),
    ]:
        hidden, missing = outsider.get(hidden_url), outsider.get(missing_url)
        assert hidden.status_code == missing.status_code == 404, hidden_url
        hidden_body = {k: str(v).replace("psm", "X") for k, v in hidden.json().items()}
        assert hidden_body == {k: str(v).replace("no-such-dataset", "X") for k, v in missing.json().items()}
    hidden_job = outsider.get(f"/api/v1/jobs/{world['done']}")
    assert hidden_job.json() == {"detail": f"job {world['done']} not found", "field": "job_id"}


def test_removing_a_member_takes_their_access_away(app, world, admin) -> None:
    annotator = TestClient(app, headers={"Authorization": f"Bearer {world['tokens']['annotator']}"})
    assert annotator.get("/api/v1/datasets/psm").status_code == 200
    assert admin.delete("/api/v1/projects/default/members/anna-a").status_code == 204
    assert annotator.get("/api/v1/datasets/psm").status_code == 404
    # no member (any more, or of the project the admin picked by mistake): not found, not a success that removed
    # nothing while the user kept their access where they are
    again = admin.delete("/api/v1/projects/default/members/anna-a")
    assert again.status_code == 404 and again.json()["field"] == "user", again.text
    assert annotator.get(f"/api/v1/samples/{world['variant']}").status_code == 404


def test_members_see_no_server_path(app, engine, world) -> None:
    """Where the server keeps its files is the operator's: a member sees a run's artifacts inside the data
    directory (runs/N), an admin the whole path; a path outside the data directory, no member sees."""
    from db.models import TrainingRun
    from db.session import session_scope
    from services.training import runs_root

    run_id = world["runs"][0]
    with session_scope(engine) as s:
        s.get_one(TrainingRun, run_id).artifact_dir = str(runs_root() / str(run_id))
        s.get_one(TrainingRun, world["runs"][1]).artifact_dir = "/opt/elsewhere/models/7"
    seen = {
        who: {
            r["id"]: r["artifact_dir"]
            for r in (
                TestClient(app, headers={"Authorization": f"Bearer {world['tokens'][who]}"})
                .get(f"/api/v1/training-runs/{i}")
                .json()
                for i in world["runs"]
            )
        }
        for who in ("admin", "annotator")
    }
    assert seen["annotator"] == {run_id: f"runs/{run_id}", world["runs"][1]: None}
    assert seen["admin"] == {run_id: str(runs_root() / str(run_id)), world["runs"][1]: "/opt/elsewhere/models/7"}


def test_members_see_a_runs_model_directory_by_its_last_part(app, engine, world) -> None:
    """A lead may train on a model directory of the server's; the project's annotators read the run (its
    summary, its config, an ensemble's members) with the directory named by its last part, as a variant's model;
    an admin reads it whole, and a hub id reads as it is for everyone."""
    from sqlalchemy.orm.attributes import flag_modified

    from db.models import TrainingRun
    from db.session import session_scope

    local, hub = world["runs"][0], world["runs"][1]
    with session_scope(engine) as s:
        for run_id, encoder in ((local, "/srv/models/xlmr-tuned"), (hub, "xlm-roberta-base")):
            run = s.get_one(TrainingRun, run_id)
            run.config = {**(run.config or {}), "encoder": encoder, "encoders": {"7": "/srv/models/xlmr-tuned"}}
            flag_modified(run, "config")

    def seen(who: str) -> tuple[dict[int, Any], dict[int, Any], dict[int, Any]]:
        http = TestClient(app, headers={"Authorization": f"Bearer {world['tokens'][who]}"})
        listed = {r["id"]: r["encoder"] for r in http.get("/api/v1/training-runs").json() if r["id"] in (local, hub)}
        details = {i: http.get(f"/api/v1/training-runs/{i}").json() for i in (local, hub)}
        return (
            listed,
            {i: d["encoder"] for i, d in details.items()},
            {i: (d["config"]["encoder"], d["config"]["encoders"]["7"]) for i, d in details.items()},
        )

    from db.models import ImpactReport

    with session_scope(engine) as s:  # an impact report's config too
        report = s.get_one(ImpactReport, world["report"])
        report.params = {**report.params, "config": {"encoder": "/srv/models/xlmr-tuned"}}
    for who, shown in (("annotator", "…/xlmr-tuned"), ("admin", "/srv/models/xlmr-tuned")):
        http = TestClient(app, headers={"Authorization": f"Bearer {world['tokens'][who]}"})
        one = http.get(f"/api/v1/impact-reports/{world['report']}").json()
        listed_reports = http.get("/api/v1/datasets/psm/impact-reports").json()
        assert one["params"]["config"]["encoder"] == shown and one["params"]["seeds"] == [1]
        assert [r["params"]["config"]["encoder"] for r in listed_reports if r["id"] == world["report"]] == [shown]

    listed, summary, config = seen("annotator")
    assert listed == summary == {local: "…/xlmr-tuned", hub: "xlm-roberta-base"}
    assert config == {local: ("…/xlmr-tuned", "…/xlmr-tuned"), hub: ("xlm-roberta-base", "…/xlmr-tuned")}
    listed, summary, config = seen("admin")
    assert listed == summary == {local: "/srv/models/xlmr-tuned", hub: "xlm-roberta-base"}
    assert config[local] == ("/srv/models/xlmr-tuned", "/srv/models/xlmr-tuned")


def test_a_jobs_worker_names_no_host_or_process(app, engine, world) -> None:
    """Members read the jobs of their projects, with the worker holding each: its id names no host and no
    process (SECURITY.md: those are for admins, at /workers); it was `hostname:pid:xxxxxx`."""
    import os
    import socket

    from db import queue
    from workers.main import Worker

    worker = Worker(engine, kinds=["export"])
    claimed = queue.claim(engine, worker.worker_id, ["export"], lease_seconds=60)
    assert claimed is not None
    job_id = claimed.id
    member = TestClient(app, headers={"Authorization": f"Bearer {world['tokens']['annotator']}"})
    shown = member.get(f"/api/v1/jobs/{job_id}").json()["worker_id"]
    listed = {j["id"]: j["worker_id"] for j in member.get("/api/v1/jobs").json()["items"]}
    assert shown == worker.worker_id == listed[job_id]
    assert socket.gethostname() not in shown and str(os.getpid()) not in shown.split("-")
