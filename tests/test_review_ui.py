"""The Streamlit pages (streamlit.testing.v1.AppTest) against the real API served by uvicorn on loopback."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from tests.review_fixtures import HOSTILE_TEXT, issue_token, live_api, review_data  # noqa: F401

APP = "../review_ui/app.py"


def signed_in(token: str, role: str, name: str = "someone") -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["token"] = token
    at.session_state["user"] = {"id": 0, "name": name, "role": role}
    return at.run()


def api(live_api: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=live_api + "/api/v1", headers={"Authorization": f"Bearer {token}"})


def status_of(live_api: str, token: str, sample_id: int) -> dict[str, Any]:
    with api(live_api, token) as c:
        return c.get(f"/samples/{sample_id}").json()


def htmls(at: AppTest) -> str:
    return "\n".join(h.proto.body for h in at.html)


def no_errors(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def test_sign_in_keeps_the_token_out_of_the_url(live_api, annotator_token, review_data) -> None:
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert at.title[0].value == "augloop review"
    at.text_input(key="token_input").input("aug_not-a-token")
    at.button[0].click().run()
    assert "refused" in at.error[0].value and "token" not in at.session_state
    at.text_input(key="token_input").input(annotator_token)
    at.button[0].click().run()
    no_errors(at)
    assert at.title[0].value == "Review"
    assert at.session_state["user"]["role"] == "annotator"
    assert dict(at.query_params) == {}
    assert annotator_token not in htmls(at) and all(annotator_token not in m.value for m in at.markdown)


def test_family_view_renders_user_text_literally(live_api, annotator_token, review_data) -> None:
    at = signed_in(annotator_token, "annotator")
    no_errors(at)
    body = htmls(at)
    # Every source text appears once as a family header, each variant as a word diff with its provenance.
    assert body.count("Source #") == len(review_data.sources)
    assert "<ins " in body and "<del " in body
    assert "backtranslation · pivot de · model Helsinki-NLP/opus-mt-en-de · seed 0" in body
    # Hostile text: escaped inside our template, so the browser shows it as characters.
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body and "<script" not in body
    assert "[click me](http://evil.example)" in body and "![pic](http://evil.example/x.png)" in body
    assert "<a " not in body and "<img" not in body
    assert all("evil.example" not in m.value for m in [*at.markdown, *at.caption])  # never through markdown
    assert "**Keep** the label." in [m.value for m in at.markdown]  # the guidelines are markdown on purpose


def test_approve_reject_and_edit_from_the_cards(live_api, annotator_token, review_data) -> None:
    at = signed_in(annotator_token, "annotator")
    v1, v2, v3 = review_data.variants[review_data.sources[0]]
    at.button(key=f"ok_{v1}_1").click().run()
    no_errors(at)
    assert f"Variant #{v1} approved" in at.success[0].value
    at.selectbox(key=f"reason_{v2}").set_value("label_changed")
    at.button(key=f"no_{v2}_1").click().run()
    at.text_area(key=f"edit_{v3}_1").input("We must protect Social Security for all seniors.")
    at.button(key=f"save_{v3}_1").click().run()
    no_errors(at)
    first, second, third = (status_of(live_api, annotator_token, v) for v in (v1, v2, v3))
    assert first["sample"]["review_status"] == "approved"
    assert (
        second["sample"]["review_status"] == "rejected" and second["reviews"][0]["reason"] == "label_changed"
    )
    assert third["sample"]["text"] == "We must protect Social Security for all seniors."
    assert third["sample"]["generated_text"] != third["sample"]["text"]
    # Decided variants leave the pending queue; the family's other variants stay.
    keys = {b.key for b in at.button}
    assert not {f"ok_{v}_{n}" for v in (v1, v2, v3) for n in (1, 2)} & keys
    assert f"ok_{review_data.variants[review_data.sources[1]][0]}_1" in keys


def test_a_stale_card_says_someone_else_decided_first(live_api, annotator_token, engine, review_data) -> None:
    at = signed_in(annotator_token, "annotator")
    v = review_data.variants[review_data.sources[1]][0]
    other = issue_token(engine, "carol")
    with api(live_api, other) as c:
        assert (
            c.post(
                f"/samples/{v}/decision", json={"decision": "reject", "version": 1, "reason": "ungrammatical"}
            ).status_code
            == 200
        )
    at.button(key=f"ok_{v}_1").click().run()
    no_errors(at)
    warning = at.warning[0].value
    assert "Someone else decided first" in warning and "rejected" in warning and "carol" in warning
    state = status_of(live_api, annotator_token, v)
    assert (
        state["sample"]["review_status"] == "rejected" and len(state["reviews"]) == 1
    )  # nothing overwritten


def test_bulk_selected_family_and_filter(live_api, annotator_token, review_data) -> None:
    at = signed_in(annotator_token, "annotator")
    a, b, _ = review_data.variants[review_data.sources[2]]
    at.checkbox(key=f"sel_{a}").check()
    at.checkbox(key=f"sel_{b}").check().run()
    assert at.button(key="bulk_sel_ok").label == "Approve selected (2)"
    at.button(key="bulk_sel_ok").click().run()
    no_errors(at)
    assert "Bulk approve: 2 variants (2 approved)" in at.success[0].value
    family = review_data.sources[3]
    at.button(key=f"fam_ok_{family}").click().run()
    assert "Bulk approve: 3 variants" in at.success[0].value
    # Everything matching a filter: count, confirm, apply.
    at.selectbox(key="f_task").set_value("message").run()
    at.selectbox(key="f_label").set_value("personal").run()
    at.button(key="bulk_count_btn").click().run()
    assert any("4 pending variants match" in m.value for m in at.markdown)
    assert at.button(key="bulk_all_no").disabled
    at.selectbox(key="bulk_reason").set_value("near_duplicate")
    at.checkbox(key="bulk_confirm").check().run()
    at.button(key="bulk_all_no").click().run()
    no_errors(at)
    assert "Bulk reject: 4 variants (4 rejected)" in at.success[0].value
    with api(live_api, annotator_token) as c:
        left = c.get("/datasets/rev/review-queue").json()
        assert left["total"] == 19 - 2 - 3 - 4
        hostile = c.get(f"/samples/{review_data.hostile}").json()
    assert hostile["reviews"][0]["reason"] == "near_duplicate"


def test_filters_and_server_side_pages(live_api, annotator_token, engine) -> None:
    from db.session import session_scope
    from tests.review_fixtures import add_variant, make_dataset

    with session_scope(engine) as s:
        sources = make_dataset(s, "many")
        for i in range(70):
            add_variant(s, sources[i % 2], f"text number {i}", method="wordnet" if i % 7 else "mlm")
    at = signed_in(annotator_token, "annotator")
    assert "70 variants match" in at.caption[0].value
    assert len([h for h in at.html if "#" in h.proto.body and "pending · version" in h.proto.body]) == 50
    at.button(key="next_top").click().run()
    assert at.session_state["page"] == 2
    assert len([h for h in at.html if "pending · version" in h.proto.body]) == 20
    at.multiselect(key="f_method").select("mlm").run()
    assert at.session_state["page"] == 1 and "10 variants match" in at.caption[0].value
    at.text_input(key="f_q").input("number 14").run()
    assert "1 variants match" in at.caption[0].value


def test_datasets_page_chart_moves_with_approvals(
    live_api, annotator_token, admin_token, review_data
) -> None:
    at = signed_in(annotator_token, "annotator")
    at.switch_page("app_pages/datasets.py").run()
    no_errors(at)
    assert len(at.get("vega_lite_chart")) == 2  # one bar chart per task
    assert not [h for h in at.header if h.value == "Manage"]  # annotators do not manage datasets

    def attack_after(app: AppTest) -> int:
        frame = app.dataframe[1].value  # task message
        return int(frame.loc[frame["class"] == "attack", "train + approved variants"].iloc[0])

    assert attack_after(at) == 1
    with api(live_api, annotator_token) as c:
        c.post(
            "/datasets/rev/bulk-decisions",
            json={"decision": "approve", "parent_id": review_data.sources[3], "confirm": True},
        )
    at.run()
    assert attack_after(at) == 4
    admin = signed_in(admin_token, "admin")
    admin.switch_page("app_pages/datasets.py").run()
    assert [h for h in admin.header if h.value == "Manage"]
    admin.text_area(key="ds_guidelines").input("Reject anything that changes the **stance**.")
    admin.number_input(key="ds_k").set_value(2)
    admin.button[[b.label for b in admin.button].index("Save review settings")].click().run()
    no_errors(admin)
    with api(live_api, admin_token) as c:
        ds = c.get("/datasets/rev").json()
    assert ds["reviews_required"] == 2 and "stance" in ds["guidelines"]


def test_jobs_page_shows_progress_counters_errors_and_cancels(live_api, annotator_token, engine) -> None:
    from db import queue
    from db.models import Job
    from db.session import session_scope

    with session_scope(engine) as s:
        running = queue.enqueue(s, "augment", {"method": "wordnet"})
        running.status, running.progress_done, running.progress_total = "running", 30, 120
        running.progress_info = {"kept": 25, "dropped": {"similarity": 3, "duplicate": 2}}
        failed = queue.enqueue(s, "export", {})
        failed.status, failed.last_error = "failed", "boom <b>not html</b>"
        ids = (running.id, failed.id)
    at = signed_in(annotator_token, "annotator")
    at.switch_page("app_pages/jobs.py").run()
    no_errors(at)
    assert at.get("progress")[0].proto.value == 25  # 30 of 120
    assert "kept 25" in htmls(at)
    assert at.code[0].value == "boom <b>not html</b>"
    table = at.dataframe[0].value
    assert dict(zip(table["counter"], table["value"], strict=True))["dropped.similarity"] == "3"
    at.button(key=f"cancel_{ids[0]}").click().run()
    with session_scope(engine) as s:
        assert s.get(Job, ids[0]).cancel_requested
    assert f"cancel_{ids[1]}" not in {b.key for b in at.button}  # a failed job has nothing to cancel


def test_training_page_lists_runs_and_starts_one(live_api, annotator_token, engine, review_data) -> None:
    from db.models import Dataset, TrainingRun
    from db.session import session_scope

    with session_scope(engine) as s:
        ds = s.query(Dataset).filter_by(name="rev").one()
        s.add(
            TrainingRun(
                dataset_id=ds.id,
                name="baseline",
                status="succeeded",
                curve=[
                    {"epoch": 1, "loss": 0.9, "val_macro_f1": 0.4},
                    {"epoch": 2, "loss": 0.6, "val_macro_f1": 0.5},
                ],
                metrics={"val": {"overall_macro_f1": 0.5}, "best_epoch": 2},
            )
        )
    at = signed_in(annotator_token, "annotator")
    at.switch_page("app_pages/training.py").run()
    no_errors(at)
    assert at.dataframe[0].value["name"].tolist() == ["baseline"]
    assert len(at.get("vega_lite_chart")) == 1  # the curve
    assert next(m for m in at.metric if m.label == "val macro f1").value == "0.500"


def test_training_page_starts_a_budgeted_run_and_shows_its_plan_and_lr_trials(
    live_api, annotator_token, engine, review_data
) -> None:
    from sqlalchemy import select

    from db.models import Dataset, TrainingRun
    from db.session import session_scope

    trials = [{"scale": 1.0, "lr": 2.5e-5, "steps": 120, "val_macro_f1": 0.41, "seconds": 30.0},
              {"scale": 2.0, "lr": 5e-5, "steps": 120, "val_macro_f1": 0.44, "seconds": 31.0}]
    with session_scope(engine) as s:
        ds = s.query(Dataset).filter_by(name="rev").one()
        s.add(TrainingRun(
            dataset_id=ds.id, name="budgeted", status="succeeded",
            lr_selection={"status": "done", "reason": "best val macro-F1 0.4400 at 2 × the planned LR",
                          "scale": 2.0, "trials": trials},
            metrics={"val": {"overall_macro_f1": 0.44}, "plan": {
                "steps_done": 900, "batch_size": 12, "grad_accum": 1, "lr": 5e-5,
                "reasons": ["R-Drop off: the run affords 1.9 epochs with it (< 10)"]}},
        ))
    at = signed_in(annotator_token, "annotator")
    at.switch_page("app_pages/training.py").run()
    no_errors(at)
    labels = [e.label.replace("\\", "") for e in at.expander]  # user-visible text is escaped, never markdown
    assert any(label.startswith("Learning-rate selection: done") for label in labels)
    assert any(label.startswith("Plan: 900 steps of batch 12 × 1") for label in labels)
    trial_frame = next(f.value for f in at.dataframe if "scale" in f.value.columns)
    assert trial_frame["scale"].tolist() == [1.0, 2.0]
    assert "R-Drop off: the run affords 1.9 epochs with it (< 10)" in [t.value for t in at.text]

    at.number_input(key="train_budget").set_value(12.0)
    at.button[[b.label for b in at.button].index("Start training")].click().run()
    no_errors(at)
    with session_scope(engine) as s:
        runs = list(s.scalars(select(TrainingRun).where(TrainingRun.name != "budgeted")))
        assert sorted(r.kind for r in runs) == ["single", "tfidf"]  # the TF-IDF member is on by default
        assert next(r for r in runs if r.kind == "single").config["budget_minutes"] == 12.0


def _task_metrics(f1s: dict[str, float], matrix: list[list[int]]) -> dict:
    return {"macro_f1": sum(f1s.values()) / len(f1s), "accuracy": 0.5, "n": sum(map(sum, matrix)),
            "per_class": {k: {"f1": v, "precision": v, "recall": v, "support": 2} for k, v in f1s.items()},
            "confusion": {"labels": list(f1s), "matrix": matrix}}


def test_training_page_shows_per_class_f1_confusion_and_compares_runs(live_api, annotator_token, engine,
                                                                     review_data) -> None:
    from db.models import Dataset, TrainingRun
    from db.session import session_scope

    with session_scope(engine) as s:
        ds = s.query(Dataset).filter_by(name="rev").one()
        for name, f1 in (("originals", 0.25), ("augmented", 0.75)):
            test = {"overall_macro_f1": 0.5, "tasks": {
                "bias": _task_metrics({"neutral": 0.5, "partisan": f1}, [[3, 1], [2, 2]])}}
            s.add(TrainingRun(dataset_id=ds.id, name=name, status="succeeded", metrics={"val": test, "test": test}))
    at = signed_in(annotator_token, "annotator")
    at.switch_page("app_pages/training.py").run()
    no_errors(at)
    frames = [f.value for f in at.dataframe]
    per_class = next(f for f in frames if "class" in f.columns and "f1" in f.columns)
    assert dict(zip(per_class["class"], per_class["f1"], strict=True)) == {"neutral": 0.5, "partisan": 0.75}
    confusion = next(f for f in frames if list(f.columns) == ["neutral", "partisan"])
    assert confusion.loc["partisan", "neutral"] == 2
    comparison = frames[-1]
    delta = comparison.columns[-1]
    row = comparison[(comparison["class"] == "partisan")].iloc[0]
    assert delta.endswith("#1") and abs(row[delta] - 0.5) < 1e-9  # run 2 (augmented) − run 1 (originals)


def test_training_page_without_training_routes(settings, engine, annotator_token, monkeypatch) -> None:
    """An API server from before the trainer: the page says so instead of failing."""
    import api.main
    from api.routes import training
    from tests.review_fixtures import seed_review_data, serve

    seed_review_data(engine)
    monkeypatch.setattr(api.main, "ROUTERS", [r for r in api.main.ROUTERS if r is not training.router])
    with serve(api.main.create_app(settings, engine), monkeypatch):
        at = signed_in(annotator_token, "annotator")
        at.switch_page("app_pages/training.py").run()
        no_errors(at)
        assert "no training endpoints" in at.info[0].value


def test_tokens_page_is_for_admins(live_api, annotator_token, admin_token) -> None:
    annotator = signed_in(annotator_token, "annotator")
    with pytest.raises(ValueError):
        annotator.switch_page("app_pages/tokens.py")
    at = signed_in(admin_token, "admin")
    at.switch_page("app_pages/tokens.py").run()
    no_errors(at)
    at.text_input[0].input("dora")
    at.button[0].click().run()
    token = at.code[0].value
    assert token.startswith("aug_") and "not shown again" in at.success[0].value
    with httpx.Client(base_url=live_api) as c:
        assert c.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).json()["name"] == "dora"
    dora = next(r for r in at.dataframe[0].value.to_dict("records") if r["name"] == "dora")
    at.selectbox(key="revoke_pick").set_value(dora["id"])
    at.button(key="revoke_btn").click().run()
    no_errors(at)
    with httpx.Client(base_url=live_api) as c:
        assert c.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401
        assert c.get("/api/v1/me", headers={"Authorization": f"Bearer {admin_token}"}).status_code == 200


def test_admin_imports_exports_and_deletes_a_dataset(live_api, admin_token, review_data) -> None:
    at = signed_in(admin_token, "admin")
    at.switch_page("app_pages/datasets.py").run()
    csv = b"id,text,stance\n1,We will win,pro\n2,We will lose,con\n3,Maybe we win,pro\n"
    at.file_uploader[0].upload("tiny.csv", csv, "text/csv")
    at.text_input[0].set_value("tiny")
    at.text_input[1].set_value("stance")
    at.button[[b.label for b in at.button].index("Import")].click().run()
    no_errors(at)
    assert "Imported 3 samples" in at.success[0].value
    at.run()  # the dataset list was drawn before the import ran
    at.selectbox(key="dataset").set_value("tiny").run()
    at.button[[b.label for b in at.button].index("Prepare export")].click().run()
    no_errors(at)
    [download] = at.get("download_button")
    assert "tiny.csv" in download.proto.label
    at.text_input(key="del_confirm").input("tiny").run()
    at.button[[b.label for b in at.button].index("Delete dataset")].click().run()
    with api(live_api, admin_token) as c:
        assert [d["name"] for d in c.get("/datasets").json()] == ["rev"]
