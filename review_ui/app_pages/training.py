"""Training: start a run on the approved data and follow it (curve, metrics)."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import streamlit as st

from review_ui.client import ApiError
from review_ui.render import plain
from review_ui.state import client, pick_dataset, show_flash

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
        config = st.text_area(
            "Config overrides (JSON)",
            value="{}",
            height=100,
            help='e.g. {"epochs": 5, "encoder": "bert-base-multilingual-cased"}',
        )
        go = st.form_submit_button("Start training", type="primary")
    if not go:
        return
    try:
        overrides = json.loads(config or "{}")
        seed_list = [int(s) for s in seeds.replace(" ", "").split(",") if s]
    except ValueError as err:
        st.error(f"Config must be a JSON object and seeds whole numbers: {err}")
        return
    try:
        created = client().start_training(
            {"dataset": dataset, "name": name, "config": overrides, "seeds": seed_list}
        )
    except ApiError as err:
        st.error(str(err))
        return
    ids = ", ".join(f"#{r['id']}" for r in created.get("runs", []))
    st.success(f"Queued training run(s) {ids}; a worker picks them up.")


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
    if run.get("metrics"):
        with st.expander("Metrics"):
            st.json(run["metrics"])
    if run.get("config"):
        with st.expander("Config"):
            st.json(run["config"])
    if run.get("error"):
        st.code(run["error"], language=None)


st.title("Training")
show_flash()
chosen = pick_dataset()
if chosen is None:
    st.stop()
try:
    runs = client().training_runs(dataset=chosen["name"])
except ApiError as err:
    if err.status in (404, 405):
        st.info("This API server has no training endpoints yet (they arrive with the trainer).")
        st.stop()
    st.error(str(err))
    st.stop()
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
