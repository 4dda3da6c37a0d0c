"""Augmentation impact: start a report (originals only vs. all approved vs. each method left out, × seeds)
and read it as a table (arm × task × class) and a chart of the per-class deltas against originals only."""

from __future__ import annotations

from typing import Any

import streamlit as st

from review_ui import charts
from review_ui.impact_tables import contributions, table
from review_ui.render import plain
from review_ui.state import (
    client,
    fetch_or_stop,
    leads,
    page_with_dataset,
    submit_once,
    submitted_run_inputs,
)


def queued(created: dict[str, Any]) -> tuple[str, str]:
    report = created["report"]
    return "success", f"Queued impact report #{report['id']}: {report['progress']['total']} training runs."


def start_form(dataset: str) -> None:
    with st.form("start_impact"):
        seeds = st.text_input("Seeds (each arm trains once per seed)", value="42, 43, 44")
        methods = st.text_input("Methods to leave out in turn", placeholder="empty: every approved method")
        inputs = submitted_run_inputs(
            seeds,
            "Trainer config overrides (JSON, shared by every arm)",
            '{"epochs": 5, "max_length": 128}',
            "Start impact report",
            "impact",
        )
    if inputs is None:
        return
    body: dict[str, Any] = {"seeds": inputs[0], "config": inputs[1]}
    if methods.strip():
        body["methods"] = [m.strip() for m in methods.split(",") if m.strip()]
    api = client()  # once per form generation (review_ui.state.submit_once: a double click queued it twice)
    submit_once("impact", api.start_impact_report, dataset, body, said=queued)
    st.rerun()


def show_report(report: dict[str, Any]) -> None:
    progress = report.get("progress") or {}
    cols = st.columns(3)
    cols[0].metric("Status", report["status"])
    cols[1].metric("Runs ended", f"{progress.get('done', 0)} / {progress.get('total', 0)}")
    cols[2].metric("Seeds", len(report.get("params", {}).get("seeds", [])))
    if progress.get("total"):
        st.progress(min(1.0, progress.get("done", 0) / progress["total"]))
    result = report.get("result") or {}
    if result.get("error"):
        st.error(plain(str(result["error"])))
        return
    if not result.get("rows"):
        st.info("The report is computed when its last training run ends.")
        return
    st.caption(
        plain(
            f"F1 ×100 on the test split. Δ: paired bootstrap over test examples "
            f"({result['bootstrap']['draws']} draws; {result['bootstrap']['statistic']})."
        )
    )
    warning = (result.get("training_sets") or {}).get("warning")  # arms that trained on a dataset that changed
    if warning:
        st.warning(plain(str(warning)))
    st.dataframe(table(result), hide_index=True, width="stretch")
    chart = charts.impact_deltas(result)  # one row per task and class, whatever their names
    if not chart.empty:
        st.subheader("Δ F1 against originals only, per class")
        st.bar_chart(chart, horizontal=True, stack=False)
    contrib = contributions(result)
    if not contrib.empty:
        st.subheader("What each method contributed")
        st.dataframe(contrib, hide_index=True, width="stretch")


chosen = page_with_dataset("Augmentation impact")
if chosen is None:
    st.stop()
reports = fetch_or_stop("This API server has no impact-report endpoints.", client().impact_reports, chosen["name"])
st.subheader(plain(f"Measure what augmentation did for {chosen['name']}"))
st.caption(
    "Trains without augmented variants (the originals, with approved pseudo-labels and submitted texts), with "
    "all approved variants, and with each augmenter's variants left out in turn; every arm once per seed."
)
if leads(chosen["name"]):
    start_form(chosen["name"])
else:
    st.caption("A lead of the dataset's project starts impact reports; you see them below.")
st.subheader("Reports")
if not reports:
    st.info("No impact report yet.")
    st.stop()
report_id = st.selectbox(
    "Report",
    [r["id"] for r in reports],
    key="impact_pick",
    format_func=lambda i: f"#{i} {next((r['status'] for r in reports if r['id'] == i), '')}",
)
detail = next((r for r in reports if r["id"] == report_id), None)
if detail:
    show_report(detail)
    if detail["status"] in ("queued", "running") and st.button("Refresh"):
        st.rerun()
