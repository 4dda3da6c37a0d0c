"""Training: start a run on the approved data and follow it (curve, metrics)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from review_ui.client import ApiError
from review_ui.render import plain
from review_ui.state import call, client, fetch_or_stop, page_with_dataset, submitted_run_inputs

COLUMNS = [
    "id",
    "name",
    "kind",
    "status",
    "encoder",
    "seed",
    "epochs_done",
    "val_macro_f1",
    "test_macro_f1",
    "created_at",
]


def start_form(dataset: str) -> None:
    with st.form("start_training"):
        name = st.text_input("Run name", placeholder="optional")
        seeds = st.text_input(
            "Seeds (one run each, comma-separated)", placeholder="e.g. 1, 2, 3; empty: one run"
        )
        budget = st.number_input(
            "Minutes of training per run (0: the configured epochs, however long)", min_value=0.0,
            max_value=7 * 24 * 60.0, value=0.0, step=5.0, key="train_budget",
            help="Steps, learning rate and regularisers are planned to fit; the learning rate is checked "
            "on val first when the budget allows",
        )
        classical = st.checkbox("Also train the TF-IDF member (to ensemble with the seeds)", value=True)
        inputs = submitted_run_inputs(
            seeds,
            "Config overrides (JSON)",
            '{"epochs": 5, "encoder": "bert-base-multilingual-cased"}',
            "Start training",
        )
    if inputs is None:
        return
    config = {**inputs[1], **({"budget_minutes": budget} if budget > 0 else {})}
    created = call(
        client().start_training,
        {"dataset": dataset, "name": name, "config": config, "seeds": inputs[0], "classical": classical},
    )
    if created is None:
        return
    ids = ", ".join(f"#{r['id']}" for r in created.get("runs", []))
    st.success(f"Queued training run(s) {ids}; a worker picks them up.")


def per_class_frame(task_metrics: dict[str, Any]) -> pd.DataFrame:
    rows = [{"class": str(label), "f1": v.get("f1"), "precision": v.get("precision"), "recall": v.get("recall"),
             "support": v.get("support")} for label, v in (task_metrics.get("per_class") or {}).items()]
    return pd.DataFrame(rows)


def compare_runs(a: dict[str, Any], b: dict[str, Any]) -> pd.DataFrame:
    """Per task and class: F1 of two runs on the same split (test when both have it) and the difference."""
    split = "test" if (a.get("metrics") or {}).get("test") and (b.get("metrics") or {}).get("test") else "val"
    tasks_a = ((a.get("metrics") or {}).get(split) or {}).get("tasks") or {}
    tasks_b = ((b.get("metrics") or {}).get(split) or {}).get("tasks") or {}
    rows = []
    for task in tasks_a.keys() & tasks_b.keys():
        ma, mb = tasks_a[task], tasks_b[task]
        rows.append({"task": task, "class": "(macro-F1)", f"#{a['id']}": ma.get("macro_f1"),
                     f"#{b['id']}": mb.get("macro_f1")})
        for label in ma.get("per_class") or {}:
            rows.append({"task": task, "class": str(label), f"#{a['id']}": ma["per_class"][label].get("f1"),
                         f"#{b['id']}": ((mb.get("per_class") or {}).get(label) or {}).get("f1")})
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame[f"#{b['id']} − #{a['id']}"] = frame[f"#{b['id']}"] - frame[f"#{a['id']}"]
        frame.insert(0, "split", split)
    return frame


def show_run(run: dict[str, Any]) -> None:
    cols = st.columns(4)
    cols[0].metric("Status", run["status"])
    cols[1].metric("Epochs done", run.get("epochs_done", 0))
    for col, key in ((cols[2], "val_macro_f1"), (cols[3], "test_macro_f1")):
        value = run.get(key)
        col.metric(key.replace("_", " "), "n/a" if value is None else f"{value:.3f}")
    progress = run.get("progress") or {}
    if progress.get("total"):
        st.progress(
            min(1.0, progress.get("done", 0) / progress["total"]),
            text=f"epoch {progress.get('done', 0)} / {progress['total']}",
        )
    curve = pd.DataFrame(run.get("curve") or [])
    numeric = [c for c in curve.columns if c != "epoch" and pd.api.types.is_numeric_dtype(curve[c])]
    if numeric:
        st.line_chart(curve, x="epoch" if "epoch" in curve.columns else None, y=numeric)
    metrics = run.get("metrics") or {}
    split = "test" if metrics.get("test") else "val"
    evaluation = metrics.get(split) or {}
    for task, m in (evaluation.get("tasks") or {}).items():
        st.markdown(f"**{plain(task)}** · {split} macro-F1 "
                    f"{'n/a' if m.get('macro_f1') is None else format(m['macro_f1'], '.3f')}")
        left, right = st.columns(2)
        per_class = per_class_frame(m)
        if not per_class.empty:
            left.bar_chart(per_class.set_index("class")["f1"], horizontal=True)
            left.dataframe(per_class, hide_index=True)
        confusion = m.get("confusion") or {}
        if confusion.get("matrix"):
            labels = [str(x) for x in confusion["labels"]]
            right.caption("Confusion matrix (rows: gold, columns: predicted)")
            right.dataframe(pd.DataFrame(confusion["matrix"], index=labels, columns=labels))
    selection = run.get("lr_selection_detail") or {}
    if selection:
        with st.expander(plain(f"Learning-rate selection: {selection.get('status')} "
                               f"{selection.get('reason') or ''}")):
            trials = pd.DataFrame(selection.get("trials") or [])
            if not trials.empty:
                st.dataframe(trials, hide_index=True)
    plan = metrics.get("plan") or {}
    if plan:
        with st.expander(plain(f"Plan: {plan.get('steps_done')} steps of batch {plan.get('batch_size')} × "
                               f"{plan.get('grad_accum')}, LR {plan.get('lr', 0):.3g}")):
            for reason in plan.get("reasons") or []:
                st.text(reason)
    if metrics:
        with st.expander("All metrics (JSON)"):
            st.json(metrics)
    if run.get("config"):
        with st.expander("Config"):
            st.json(run["config"])
    if run.get("error"):
        st.code(run["error"], language=None)


chosen = page_with_dataset("Training")
if chosen is None:
    st.stop()
runs = fetch_or_stop(
    "This API server has no training endpoints yet (they arrive with the trainer).",
    client().training_runs,
    dataset=chosen["name"],
)
st.subheader(plain(f"Start a run on {chosen['name']}"))
st.caption("Trains on train-split originals plus approved variants only.")
start_form(chosen["name"])
st.subheader("Runs")
if not runs:
    st.info("No training runs yet.")
    st.stop()
st.dataframe(pd.DataFrame(runs)[[c for c in COLUMNS if c in runs[0]]], hide_index=True, width="stretch")
run_id = st.selectbox(
    "Follow run",
    [r["id"] for r in runs],
    key="run_pick",
    format_func=lambda i: f"#{i} {next((r['name'] for r in runs if r['id'] == i), '')}",
)
detail = None
try:
    detail = client().training_run(run_id)
except ApiError as err:
    st.error(str(err))
if detail:
    show_run(detail)
    if detail["status"] in ("queued", "running") and st.button("Refresh"):
        st.rerun()
finished = [r["id"] for r in runs if r.get("status") == "succeeded"]
if len(finished) >= 2:
    st.subheader("Compare two runs")
    left, right = st.columns(2)
    first = left.selectbox("Run A", finished, index=1, key="cmp_a")
    second = right.selectbox("Run B", finished, index=0, key="cmp_b")
    try:
        table = compare_runs(client().training_run(first), client().training_run(second))
    except ApiError as err:
        st.error(str(err))
    else:
        st.dataframe(table, hide_index=True, width="stretch")
