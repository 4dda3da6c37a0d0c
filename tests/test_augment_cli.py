"""`augloop augment plan|run` as a user runs them, then `augloop worker --burst`: pending variants stored."""

from __future__ import annotations

import json
import subprocess

import pytest
from sqlalchemy import func, select

from tests.augment_fixtures import run_worker
from tests.cli_process import cli_env, run_augloop

pytestmark = pytest.mark.usefixtures("augment_env")


def augloop(settings, *args: str) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
    return run_augloop(*args, env=cli_env(settings, AUGLOOP_AUGMENT_TORCH_THREADS="1"), timeout=300)


def test_plan_run_worker_leaves_pending_variants(settings, engine, example_dataset) -> None:
    from sqlalchemy.orm import Session

    from db.models import AugmentationPlan, Job, Sample

    plan = augloop(settings, "augment", "plan", example_dataset)
    assert plan.returncode == 0, plan.stderr
    lines = {tuple(line.split()[:2]): line.split() for line in plan.stdout.splitlines() if len(line.split()) >= 8}
    assert lines["message", "other"][2:6] == ["99", "0", "452", "353"]
    assert lines["bias", "partisan"][2:6] == ["1049", "0", "1181", "132"]
    assert "1579 variants from" in plan.stdout
    as_json = json.loads(
        augloop(settings, "augment", "plan", example_dataset, "--json", "--methods", "wordnet,mlm").stdout
    )
    assert as_json["methods"] == {"wordnet": 790, "mlm": 789}
    floor = json.loads(augloop(settings, "augment", "plan", example_dataset, "--json", "--min-count", "300").stdout)
    assert floor["target"]["min_count"] == 300
    assert next(c for c in floor["classes"] if c["label"] == "other")["target"] == 452  # 40% of the largest: more
    assert all(c["target"] >= min(300, 10 * c["original"]) for c in floor["classes"])
    run = augloop(settings, "augment", "run", example_dataset, "--methods", "wordnet")
    assert run.returncode == 0, run.stderr
    assert "enqueued job(s)" in run.stdout
    assert "no worker that takes augment jobs is running: start one with `augloop worker`" in run.stdout
    worker = augloop(settings, "worker", "--burst", "--kinds", "augment")
    assert worker.returncode == 0 and "1 succeeded" in worker.stdout, worker.stderr[-2000:]
    with Session(engine) as s:
        job = s.scalars(select(Job)).one()
        assert job.status == "succeeded" and job.result["kept"] > 1000
        # the ids are cut to 1,000 and the count says so (it was cut in silence)
        assert len(job.result["variant_ids"]) == 1000 and job.result["variant_ids_count"] == job.result["kept"]
        pending = s.scalar(
            select(func.count()).where(
                Sample.origin == "augmented",
                Sample.review_status == "pending",
                Sample.method == "wordnet",
                Sample.parent_id.is_not(None),
                Sample.job_id == job.id,
            )
        )
        assert pending == job.result["kept"]
        stored = s.scalars(select(AugmentationPlan)).one()
        assert stored.job_ids == [job.id] and job.params["plan_id"] == stored.id
    again = augloop(settings, "augment", "plan", example_dataset)  # pending variants count towards the target
    assert "1579 variants" not in again.stdout
    # the plan `augment plan --no-count-pending` previews is the one `augment run --no-count-pending` enqueues
    preview = json.loads(augloop(settings, "augment", "plan", example_dataset, "--json", "--no-count-pending").stdout)
    run = augloop(settings, "augment", "run", example_dataset, "--no-count-pending")
    assert run.returncode == 0, run.stderr
    with Session(engine) as s:
        second = s.scalars(select(AugmentationPlan).order_by(AugmentationPlan.id.desc())).first()
        assert second is not None and second.id != stored.id
        assert second.params["count_pending"] is False and second.plan["methods"] == preview["methods"]


def test_run_without_plan_and_wait(settings, engine, mini_dataset) -> None:
    from typer.testing import CliRunner

    from augloop.cli import app
    from augloop.cli_augment import wait_for_jobs

    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "augment",
            "run",
            "mini",
            "--no-plan",
            "--where",
            "message=attack",
            "--n-per-text",
            "2",
            "--seed",
            "5",
            "--filters",
            '{"min_similarity": 0.2}',
        ],
    )
    assert result.exit_code == 0, result.output
    job_id = int(result.output.split("enqueued job(s) ")[1].split(";")[0])
    from db.models import Job
    from db.session import session_scope

    with session_scope(engine) as s:
        assert s.get_one(Job, job_id).params["filters"]["min_similarity"] == 0.2  # the job filters with it
    run_worker(engine)
    assert wait_for_jobs([job_id], poll_seconds=0.05) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["augment", "run", "mini", "--methods", "summarize"], "unknown method"),
        (["augment", "run", "mini", "--no-plan"], "--sample-id"),
        (["augment", "plan", "mini", "--min-fraction", "1.5"], "min_fraction_of_largest"),
        (["augment", "plan", "nope"], "not found"),
        (["augment", "run", "mini", "--params", "{bad"], "--params must be JSON"),
        (["augment", "run", "mini", "-m", "mlm", "--params", '{"mlm": {"aug_p": NaN}}'], "params.mlm.aug_p"),
        (["augment", "plan", "mini", "--params", '{"wordnet": {"aug_p": Infinity}}'], "params.wordnet.aug_p"),
        # A typo in --where names what the dataset has, rather than "no train-split original matches".
        (["augment", "run", "mini", "--no-plan", "--where", "message=atack"], "'attack'"),
        (["augment", "run", "mini", "--no-plan", "--where", "tone=attack"], "'message'"),
        (["augment", "run", "mini", "--no-plan", "--where", "message=attack", "--where", "message=media"], "twice"),
        (["augment", "plan", "mini", "--max-multiplier", "nan"], "max_multiplier must be in [1, 1000]"),
        (["augment", "plan", "mini", "--max-multiplier", "inf"], "max_multiplier must be in [1, 1000]"),
        (["augment", "run", "mini", "--max-multiplier", "1e308"], "max_multiplier must be in [1, 1000]"),
        (["augment", "plan", "mini", "--min-count", "0"], "min_count must be in [1, 10,000,000]"),
        # the filters the API takes, from the command line too, checked as the API checks them
        (["augment", "run", "mini", "--filters", "[1]"], "--filters must be a JSON object"),
        (["augment", "plan", "mini", "--filters", '{"min_similarity": NaN}'], "filters.min_similarity"),
        (["augment", "run", "mini", "--no-plan", "--sample-id", "1", "--filters", '{"leak": 1}'], "filters.leak"),
        # queued, then failed by the worker (a negative one lowered the project's work in flight)
        (["augment", "run", "mini", "--no-plan", "--sample-id", "1", "--n-per-text", "0"], "--n-per-text"),
        (["augment", "run", "mini", "--no-plan", "--sample-id", "1", "--n-per-text", "-5"], "--n-per-text"),
        (["augment", "run", "mini", "--no-plan", "--sample-id", "1", "--n-per-text", "5000"], "--n-per-text"),
    ],
)
def test_bad_input_exits_2_with_a_message(mini_dataset, args, message) -> None:
    from typer.testing import CliRunner

    from augloop.cli import app

    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and message in result.output


@pytest.mark.parametrize("n", [0, -5, 51])
def test_the_service_refuses_a_count_of_variants_per_text_out_of_bounds(engine, mini_dataset, n) -> None:
    """Every door's bound, in the service: the CLI queued --n-per-text 0 and -5, which the worker then failed."""
    from core.errors import ValidationFailed
    from core.settings import get_settings
    from db.datasets import get_dataset
    from db.session import session_scope
    from services.augmentation import AugmentRequest, enqueue_request

    with session_scope(engine) as s, pytest.raises(ValidationFailed) as refused:
        request = AugmentRequest(methods=["wordnet"], n_per_text=n, sample_ids=[1])
        enqueue_request(s, get_dataset(s, "mini"), request, get_settings(), None)
    assert refused.value.field == "n_per_text"


def test_a_plan_of_one_variant_jobs_is_refused(lead, mini_dataset) -> None:
    """924 one-variant jobs, each reading the whole dataset into its filters first, cost twenty times the worker
    time of one job (an attacker's find): job_size starts at 100, at every door."""
    from typer.testing import CliRunner

    from augloop.cli import app

    r = lead.post(f"/api/v1/datasets/{mini_dataset}/augmentation-plans", json={"job_size": 1, "enqueue": True})
    assert r.status_code == 422 and r.json()["field"] == "job_size", r.text
    result = CliRunner().invoke(app, ["augment", "plan", mini_dataset, "--job-size", "99"])
    assert result.exit_code == 2 and "--job-size" in result.output

    twice = lead.post(f"/api/v1/datasets/{mini_dataset}/augmentation-plans", json={"tasks": ["message", "message"]})
    assert twice.status_code == 422 and twice.json()["field"] == "tasks", twice.text  # stored as given before


def test_waiting_on_jobs_that_vanish_is_no_success(engine, mini_dataset, capsys) -> None:
    """`augment run --wait` whose dataset was deleted meanwhile exited 0 (all() of no jobs is True), its last line
    still saying the job was queued (an attacker's find): exit 1, naming the job that is gone."""
    from augloop.cli_augment import wait_for_jobs
    from db.datasets import get_dataset
    from db.session import session_scope
    from services.augmentation import AugmentRequest, enqueue_request
    from services.datasets import remove

    with session_scope(engine) as s:
        from core.settings import get_settings

        job = enqueue_request(
            s, get_dataset(s, "mini"), AugmentRequest(methods=["wordnet"], sample_ids=[1]), get_settings(), None
        )
        job_id = job.id
    with session_scope(engine) as s:
        remove(s, "mini")
    assert wait_for_jobs([job_id], poll_seconds=0.05) == 1
    assert f"job {job_id} no longer exists" in capsys.readouterr().err


def test_a_job_that_keeps_little_says_why_and_what_to_do(engine, mini_dataset, capsys) -> None:
    """A plan run again that kept 0 of 21 exited 0 printing "kept 0 · dropped 21", the reason only in the job's
    result (an engineer's walk). The job's result now says, in words, why most were dropped and what to do, and
    `--wait` prints it."""
    from augloop.cli_augment import wait_for_jobs
    from core.settings import get_settings
    from db.datasets import get_dataset
    from db.models import Job
    from db.session import session_scope
    from services.augmentation import AugmentRequest, enqueue_request
    from tests.augment_fixtures import train_ids

    request = AugmentRequest(methods=["wordnet"], sample_ids=train_ids(engine, "mini", limit=6), n_per_text=2, seed=4)
    ids = []
    for _ in range(2):  # the same draws twice: the second job's variants are the first one's
        with session_scope(engine) as s:
            ids.append(enqueue_request(s, get_dataset(s, "mini"), request, get_settings(), None).id)
        run_worker(engine)
    with session_scope(engine) as s:
        first, second = (s.get_one(Job, i).result for i in ids)
    assert first["kept"] * 2 >= first["requested"] and first["advice"] is None
    assert second["kept"] == 0 and second["dropped"]["duplicate"] > 0, second
    assert second["advice"].startswith(f"kept 0 of {second['requested']}: ")
    assert "repeat variants already stored" in second["advice"] and "augment other texts" in second["advice"]
    assert wait_for_jobs(ids, poll_seconds=0.05) == 0  # nothing failed: the jobs did what they were asked
    out = capsys.readouterr().out
    assert f"job {ids[1]}: kept 0 of" in out and f"job {ids[0]}:" not in out
