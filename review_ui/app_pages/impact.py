"""Augmentation impact: start a report (originals only vs. all approved vs. each method left out, × seeds)
and read it as a table (arm × task × class) and a chart of the per-class deltas against originals only."""

from __future__ import annotations

from typing import Any

import streamlit as st

from review_ui import charts
from review_ui.client import ApiError
from review_ui.impact_tables import LONG_SECONDS, contributions, estimate_details, estimate_headline, table
from review_ui.render import plain
from review_ui.state import (
    client,
    fetch_or_stop,
    give_back_typed,
    leads,
    page_with_dataset,
    remember_typed,
    run_inputs,
    submit_key,
    submit_once,
)

BUDGET_FIELD = "Minutes of training per run (0: the configured epochs, however long)"
FORM_KEYS = ("impact_seeds", "impact_methods", "impact_budget", "impact_config")  # kept across pages


def queued(created: dict[str, Any]) -> tuple[str, str]:
    report = created["report"]
    return "success", f"Queued impact report #{report['id']}: {report['progress']['total']} training runs."


def start_body(seeds: str, methods: str, budget: float, config: str) -> dict[str, Any] | None:
    """The start request the fields describe; None, with the reason shown, when seeds or config do not parse. A
    budget in the field (> 0) wins over a `budget_minutes` in the JSON overrides."""
    inputs = run_inputs(seeds, config)
    if inputs is None:
        return None
    overrides = {**inputs[1], **({"budget_minutes": float(budget)} if budget > 0 else {})}
    body: dict[str, Any] = {"seeds": inputs[0], "config": overrides}
    if methods.strip():
        body["methods"] = [m.strip() for m in methods.split(",") if m.strip()]
    return body


def show_estimate(dataset: str, body: dict[str, Any]) -> None:
    """What the report would train and about how long, above its Start button (as the Training page shows a run's);
    an estimate the API refuses is said as text, and the start itself says why it is refused."""
    try:
        estimate = client().impact_estimate(dataset, body)
    except ApiError as err:
        st.warning(plain(f"No estimate: {err}"))
        return
    if estimate.get("encoder_warning"):  # the runs would fail seconds after Start: said before it
        st.warning(plain(f"The encoder cannot load here: {estimate['encoder_warning']}"))
    st.markdown(estimate_headline(estimate))
    st.caption(estimate_details(estimate))
    if estimate["seconds_total"] > LONG_SECONDS:
        st.warning(
            "That is long for one worker. Minutes of training per run (above) plan every arm's length from that "
            "budget (the estimate above then follows it; the arms with more texts take a little longer). Fewer "
            "seeds, fewer epochs or a shorter max length cut it down too."
        )


def start_form(dataset: str) -> None:
    # Fields, not a form: the estimate follows them before anything starts (in a form it saw them only on Start).
    # What was typed stays across pages (review_ui.state.give_back_typed); before that, the defaults.
    give_back_typed(FORM_KEYS)
    ss = st.session_state
    ss.setdefault("impact_seeds", "42, 43, 44")
    ss.setdefault("impact_budget", 0.0)
    ss.setdefault("impact_config", "{}")
    seeds = st.text_input("Seeds (each arm trains once per seed)", key="impact_seeds")
    methods = st.text_input(
        "Methods to leave out in turn", placeholder="empty: every approved method", key="impact_methods"
    )
    budget = st.number_input(
        BUDGET_FIELD,
        min_value=0.0,
        max_value=7 * 24 * 60.0,
        step=5.0,
        key="impact_budget",
        help="Every arm's runs then train one length, planned once by the report's LR selection for this budget; "
        "it wins over a budget_minutes in the JSON below (which applies while this is 0)",
    )
    config = st.text_area(
        "Trainer config overrides (JSON, shared by every arm)",
        height=100,
        key="impact_config",
        help='e.g. {"epochs": 5, "max_length": 128}',
    )
    remember_typed(FORM_KEYS)
    body = start_body(seeds, methods, budget, config)
    if body is None:
        return
    show_estimate(dataset, body)
    # keyed by the form's generation (review_ui.state.submit_once: a double click queued the report twice)
    if not st.button("Start impact report", type="primary", key=submit_key("impact")):
        return
    api = client()  # once per form generation
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
