"""What a training request checks against the view its runs will train on, and what it refuses at once."""

from __future__ import annotations

import csv
import io
from typing import Any

from tests.test_trainer_api import drain
from tests.trainer_fixtures import add_variant, import_small, small_csv, tiny_encoder, tiny_keys  # noqa: F401


def one_class_originals(engine: Any) -> str:
    """Every train original of `bias` is `neutral`; three approved variants hold `partisan` (an annotator's
    edited label, approved submissions): the class exists only with the variants."""
    from db.session import session_scope
    from services.importing import ImportSpec, import_file

    rows = list(csv.DictReader(io.StringIO(small_csv(40, 16, 16, 0).decode())))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["id", "text", "bias", "message", "split"])
    for row in rows:
        bias = "neutral" if row["split"] == "train" else row["bias"]
        writer.writerow([row["id"], row["text"], bias, row["message"], row["split"]])
    with session_scope(engine) as s:
        import_file(s, out.getvalue().encode(), ImportSpec(dataset="d", tasks=["bias", "message"]), filename="d.csv")
    for i in range(3):
        labels = {"bias": "partisan", "message": "policy"}
        add_variant(engine, "d", "train", "approved", f"a partisan rewrite number {i}", labels=labels)  # method "test"
    return "d"


def test_a_run_without_variants_of_a_class_only_variants_hold_is_refused_at_the_request(
    lead, engine, tiny_encoder: str
) -> None:
    """It was queued and "succeeded", having trained `bias` on `neutral` alone."""
    one_class_originals(engine)
    config = tiny_keys(tiny_encoder, epochs=1, lr=1e-3, grad_accum=1, variants="none")
    r = lead.post("/api/v1/training-runs", json={"dataset": "d", "config": config})
    assert r.status_code == 422 and r.json()["field"] == "config.tasks", r.text
    assert "only the class 'neutral'" in r.json()["detail"]
    # with the variants it has both classes, and is queued
    config["variants"] = "approved"
    assert lead.post("/api/v1/training-runs", json={"dataset": "d", "config": config}).status_code == 202


def test_an_impact_report_whose_originals_arm_cannot_train_is_refused_before_anything_trains(
    lead, engine, tiny_encoder: str
) -> None:
    """It was queued: the other arms' seeds trained, then the originals arm's TF-IDF member failed on one class,
    the report failed and every other run was cancelled."""
    from sqlalchemy import func, select

    from db.models import ImpactReport, TrainingRun
    from db.session import session_scope

    one_class_originals(engine)
    config = tiny_keys(tiny_encoder, epochs=1, lr=1e-3, grad_accum=1)
    r = lead.post("/api/v1/datasets/d/impact-reports", json={"seeds": [1, 2], "config": config})
    assert r.status_code == 422 and "only the class 'neutral'" in r.json()["detail"], r.text
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(ImpactReport)) == 0
        assert s.scalar(select(func.count()).select_from(TrainingRun)) == 0


def test_a_run_whose_exclusions_leave_a_task_one_class_is_refused_at_the_request(
    lead, engine, tiny_encoder: str
) -> None:
    """Leaving a method out is the run's own view: the request counted originals and every approved text, so the
    run was queued and failed in the trainer (it had once "succeeded" with one class of `bias`); the request
    counts the view without the methods it leaves out (an impact report's originals arm leaves out all)."""
    from sqlalchemy import func, select

    from db.models import TrainingRun
    from db.session import session_scope

    one_class_originals(engine)
    config = tiny_keys(tiny_encoder, epochs=1, lr=1e-3, grad_accum=1, exclude_methods=["test"])
    r = lead.post("/api/v1/training-runs", json={"dataset": "d", "config": config})
    assert r.status_code == 422 and "task 'bias' has only the class 'neutral'" in r.json()["detail"], r.text
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(TrainingRun)) == 0


def test_a_run_whose_view_lost_a_class_while_it_waited_fails_before_training_naming_it(
    lead, engine, tiny_encoder: str
) -> None:
    """The trainer counts the final view again: the variants holding `partisan` were rejected while the run
    waited for a worker, and the run trained (and "succeeded") on one class."""
    from sqlalchemy import update

    from db.models import Origin, Sample
    from db.session import session_scope

    one_class_originals(engine)
    config = tiny_keys(tiny_encoder, epochs=1, lr=1e-3, grad_accum=1)
    r = lead.post("/api/v1/training-runs", json={"dataset": "d", "config": config, "classical": False})
    assert r.status_code == 202, r.text
    with session_scope(engine) as s:
        s.execute(update(Sample).where(Sample.origin == Origin.augmented).values(review_status="rejected"))
    drain(engine, ["train"])
    run = lead.get(f"/api/v1/training-runs/{r.json()['runs'][0]['id']}").json()
    assert run["status"] == "failed", run
    assert "task 'bias' has only the class 'neutral'" in run["error"], run["error"]
    assert run["epochs_done"] == 0, run


def test_a_budget_that_does_not_limit_a_run_is_not_refused_for_the_steps_its_epochs_make(
    lead, engine, tiny_encoder: str
) -> None:
    """One epoch of a small dataset makes a few optimizer steps at any budget: a day's budget was refused with
    "1440 min afford 5 optimizer steps", where the same run without a budget trained."""
    name = import_small(engine, n_train=40, n_val=16, n_test=16, n_unlabelled=0)
    config = tiny_keys(tiny_encoder, epochs=1, lr_search="off", budget_minutes=1440)
    r = lead.post("/api/v1/training-runs", json={"dataset": name, "config": config})
    assert r.status_code == 202, r.text
    assert drain(engine, ["train"]).succeeded == 1


def test_an_impact_report_refuses_the_keys_its_arms_set_themselves(lead, engine, tiny_encoder: str) -> None:
    """config.seed beside seeds was dropped without a word (as /training-runs refuses it); so were `variants` and
    `exclude_methods`, which each arm sets."""
    name = import_small(engine, n_train=40, n_val=16, n_test=16, n_unlabelled=0)
    add_variant(engine, name, "train", "approved", "an approved rewrite of a post")  # method "test"
    for key, value in (("seed", 7), ("variants", "none"), ("exclude_methods", ["test"])):
        config = tiny_keys(tiny_encoder, epochs=1, **{key: value})
        r = lead.post(f"/api/v1/datasets/{name}/impact-reports", json={"seeds": [1, 2], "config": config})
        assert r.status_code == 422 and r.json()["field"] == f"config.{key}", (key, r.text)


def test_the_estimate_says_when_the_encoder_cannot_load_here(lead, admin, engine, tiny_encoder: str) -> None:
    """The Training page's Start made a run with a hub encoder neither cached nor downloadable (HF_HUB_OFFLINE),
    which failed seconds later; the Augment page says the same of its models before."""
    name = import_small(engine, n_train=40, n_val=16, n_test=16, n_unlabelled=0)

    def warning(client: Any, encoder: str) -> Any:
        r = client.post("/api/v1/training-estimates", json={"dataset": name, "config": tiny_keys(encoder)})
        assert r.status_code == 200, r.text
        return r.json()["encoder_warning"]

    said = warning(lead, "bert-base-multilingual-cased")  # the tests run with HF_HUB_OFFLINE=1
    assert "not in the local Hugging Face cache and HF_HUB_OFFLINE=1" in said, said
    assert warning(lead, tiny_encoder) is None and warning(admin, tiny_encoder) is None
    assert "does not exist" in warning(admin, tiny_encoder + "-gone")
    # a member's name is not looked up as a folder of the server's (that would tell what exists there): a folder
    # of the API's working directory and a name nothing has get the same answer, a hub id's
    assert warning(lead, "tests").replace("tests", "X") == warning(lead, "no-such-name").replace("no-such-name", "X")


def test_the_encoder_warning_tells_a_member_nothing_of_the_disk_and_trusts_the_operators_default(
    lead, admin, engine, tiny_encoder: str, tmp_path_factory: Any, monkeypatch: Any
) -> None:
    """A member's absolute path under the models directory read "has no config.json" for a folder that exists
    and "does not exist" for one that does not (reviewer); the operator's default given as a relative folder
    read "not in the Hugging Face cache" to members only, though the worker loads it."""
    from pathlib import Path

    from core.settings import get_settings

    name = import_small(engine, n_train=40, n_val=16, n_test=16, n_unlabelled=0)
    base = tmp_path_factory.getbasetemp()  # the models directory the tests allow
    (base / "secret-folder").mkdir(exist_ok=True)

    def warning(client: Any, config: dict[str, Any]) -> Any:
        r = client.post("/api/v1/training-estimates", json={"dataset": name, "config": config})
        assert r.status_code == 200, r.text
        return r.json()["encoder_warning"]

    there, absent = (warning(lead, tiny_keys(str(base / f))) for f in ("secret-folder", "no-such-folder"))
    assert there.replace("secret-folder", "X") == absent.replace("no-such-folder", "X"), (there, absent)
    assert "holds no model a worker here can load" in there
    encoder = Path(tiny_encoder)
    monkeypatch.chdir(encoder.parent.parent)
    monkeypatch.setenv("AUGLOOP_TRAINER_DEFAULT_ENCODER", f"{encoder.parent.name}/{encoder.name}")
    get_settings.cache_clear()
    try:
        keys = tiny_keys(tiny_encoder)
        del keys["encoder"]
        assert warning(lead, keys) is None and warning(admin, keys) is None
    finally:
        get_settings.cache_clear()
