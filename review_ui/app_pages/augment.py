"""Augment: which augmenters can run (and, for those that cannot, the setting to change), a plan that brings
the rare classes up to a target, queued as jobs, and the stored plans' progress."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from review_ui.render import plain, quantity
from review_ui.state import (
    call,
    client,
    give_back_typed,
    leads,
    page_with_dataset,
    remember_typed,
    submit_key,
    submit_once,
)

PLAN_KEYS = ("plan_methods", "plan_fraction", "plan_count", "plan_cap", "plan_seed")  # kept across pages

STATE_TEXT = {
    "ready": "ready",
    "download": "downloads on first use",
    "unavailable": "unavailable",
    "no_worker": "no worker running",
}


def augmenter_frame(statuses: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "method": s["method"],
                "status": STATE_TEXT.get(s["state"], s["state"]),
                "model": s.get("model") or "",
                "workers": s.get("workers_ready", 0),
                "setting to change": s.get("setting") or "",
                "why not / note": s.get("reason") or s.get("note") or "",
            }
            for s in statuses
        ]
    )


def show_augmenters(name: str) -> list[dict[str, Any]]:
    st.header("Augmenters")
    statuses = call(client().augmenters, name) or []
    if statuses:
        st.dataframe(
            augmenter_frame(statuses),
            hide_index=True,
            width="stretch",
            column_config={"why not / note": st.column_config.TextColumn(width="large")},
        )
    for s in statuses:
        if not s["available"]:
            # the server's words mark commands with backticks (for the CLI and the README); shown as text here
            reason = str(s["reason"]).replace("`", "").rstrip(".") + "."
            setting = s.get("setting")
            where = f" Setting: {setting}." if setting and setting not in reason else ""
            st.warning(plain(f"{s['method']}: {reason}{where}"))
    return statuses


def plan_body(
    methods: list[str], fraction: float, cap: int, seed: int, enqueue: bool, min_count: int = 0
) -> dict[str, Any]:
    target: dict[str, Any] = {"min_fraction_of_largest": fraction}
    if min_count:
        target["min_count"] = min_count
    return {
        "methods": methods,
        "target": target,
        "per_source_cap": cap,
        "seed": seed,
        "enqueue": enqueue,
    }


def plan_summary(plan: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "task": c["task"],
                "class": c["label"],
                "now": c["current"],
                "target": c["target"],
                "planned variants": c["planned"],
                "short of target": c["shortfall"],
            }
            for c in plan["classes"]
            if c["deficit"] or c["planned"]
        ]
    )


def queued(plan: dict[str, Any]) -> tuple[str, str]:
    body = plan["plan"]
    return (
        "success",
        f"Queued plan #{plan['id']}: {quantity(body['total_variants'], 'variant')} in "
        f"{quantity(len(plan['job_ids']), 'job')}. "
        "Follow them on the Jobs page; the variants arrive in the review queue as pending.",
    )


def plan_form(name: str, statuses: list[dict[str, Any]]) -> None:
    st.header("Bring the rare classes up")
    runnable = [s["method"] for s in statuses if s["available"]]
    offered = [s["method"] for s in statuses if s["state"] != "unavailable"]
    # With no worker to ask, WordNet: it needs no model, so a worker that starts can run it.
    fallback = ["wordnet"] if "wordnet" in offered else offered[:1]
    # The form's values as last sent come back with the page (review_ui.state.give_back_typed: the form came
    # back from the Jobs page at its defaults, a target of 0 texts, 5 per source); else the defaults. Widgets
    # keyed and seeded here (a changed `value=` is a new widget, which ignored the next value sent).
    give_back_typed(PLAN_KEYS)
    defaults = (runnable or fallback, 0.4, 0, 5, 0)
    for key, default in zip(PLAN_KEYS, defaults, strict=True):
        st.session_state.setdefault(key, default)
    # a method kept from before that is no longer offered (its worker went): a choice the list cannot show
    st.session_state["plan_methods"] = [m for m in st.session_state["plan_methods"] if m in offered]
    with st.form("plan"):
        methods = st.multiselect("Methods", offered, key="plan_methods")
        fraction = st.slider(
            "Target: every class to at least this fraction of its task's largest class",
            0.05,
            1.0,
            step=0.05,
            key="plan_fraction",
        )
        count = st.number_input(
            "… and to at least this many texts (0: the fraction alone); never past 10× a class's originals",
            0,
            10_000_000,
            key="plan_count",
        )
        cap = st.number_input("At most this many variants per source text", 1, 100, key="plan_cap")
        seed = st.number_input("Seed", 0, 2**31 - 1, key="plan_seed")
        preview, queue = st.columns(2)
        do_preview = preview.form_submit_button("Preview the plan")
        do_queue = queue.form_submit_button("Plan and queue the jobs", type="primary", key=submit_key("plan"))
    remember_typed(PLAN_KEYS)
    if not (do_preview or do_queue):
        return
    if not methods:
        st.error("Choose at least one method.")
        return
    body = plan_body(methods, fraction, int(cap), int(seed), do_queue, int(count))
    if do_queue:  # once per form generation (review_ui.state.submit_once: a double click queued it twice)
        api = client()
        submit_once("plan", api.create_plan, name, body, said=queued)
        st.rerun()
    plan = call(client().create_plan, name, body)
    if plan is None:
        return
    body = plan["plan"]
    st.info(
        f"{quantity(body['total_variants'], 'variant')} from {quantity(body['sources_used'], 'source text')} ("
        + ", ".join(f"{m}: {n}" for m, n in body["methods"].items())
        + "). Nothing is queued until you press “Plan and queue the jobs”."
    )
    if not body["total_variants"]:  # an empty table said nothing of why
        short = [c for c in body["classes"] if c["deficit"]]
        st.info(
            "Nothing to generate: every class already reaches the target (raise the fraction or the number of "
            "texts above to add variants)."
            if not short
            else f"Nothing to generate: {quantity(len(short), 'class falls', 'classes fall')} short of the target, but "
            "no source text of theirs can take more variants with these settings (more per source text, or "
            "another method)."
        )
    summary = plan_summary(body)
    if not summary.empty:
        st.dataframe(summary, hide_index=True, width="stretch")


def show_plans(name: str) -> None:
    # the queued ones (a preview is stored too: five previews hid every queued plan the progress still reads)
    queued = call(client().plans, name, 5, True) or []
    if not queued:
        return
    st.header("Queued plans")
    for plan in queued:
        progress = pd.DataFrame(plan.get("progress") or [])
        with st.expander(
            f"Plan #{plan['id']} · {quantity(plan['plan']['total_variants'], 'variant')} · "
            f"{quantity(len(plan['job_ids']), 'job')} · "
            f"{plan['created_at'][:19].replace('T', ' ')}",
            expanded=plan is queued[0],
        ):
            if not progress.empty:
                st.dataframe(
                    progress[["task", "label", "goal", "with_approved", "pending", "rejected", "remaining"]],
                    hide_index=True,
                    width="stretch",
                )


chosen = page_with_dataset("Augment")
if chosen:
    found = show_augmenters(chosen["name"])
    if found and leads(chosen["name"]):
        plan_form(chosen["name"], found)
    elif found:
        st.caption("A lead of the dataset's project plans and queues augmentation; you see its plans below.")
    show_plans(chosen["name"])
