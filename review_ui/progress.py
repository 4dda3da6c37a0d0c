"""Progress people can act on, shown on the Review and Datasets pages: per class, approved variants against
what the augmentation plan found missing (large bars); per annotator, decisions today, pace and agreement."""

from __future__ import annotations

from html import escape
from typing import Any

import pandas as pd
import streamlit as st

ROW = (
    "<div style='margin:6px 0 8px'>"
    "<div style='display:flex;justify-content:space-between;gap:8px'>"
    "<span style='overflow-wrap:anywhere'>{label}</span><span style='font-weight:700'>{numbers}</span></div>"
    "<div style='background:#e6eaee;border-radius:7px;height:16px;margin-top:2px'>"
    "<div style='width:{pct:.1f}%;background:{color};height:100%;border-radius:7px'></div></div>"
    "<div style='color:#555;font-size:0.85rem'>{details}</div></div>"
)


def class_progress_html(progress: dict[str, Any]) -> str:
    """Per task and class: approved / needed toward the latest plan as a bar; classes the plan did not ask
    for show their approved and pending counts without a bar."""
    parts = ["<div style='font-size:1rem;line-height:1.35'>"]
    for task, classes in progress.get("classes", {}).items():
        parts.append(f"<div style='font-weight:700;margin:10px 0 2px;font-size:1.05rem'>{escape(task)}</div>")
        planned = {label: e for label, e in classes.items() if e.get("needed")}
        for label, e in sorted(planned.items(), key=lambda kv: kv[1]["approved"] / kv[1]["needed"]):
            share = min(1.0, e["approved"] / e["needed"])
            parts.append(
                ROW.format(
                    label=escape(label),
                    pct=100 * share,
                    color="#2e8b57" if share >= 1 else "#3b7dd8",
                    numbers=escape(f"{e['approved']} / {e['needed']} approved"),
                    details=escape(
                        f"{e['pending']} pending · {e['rejected']} rejected · "
                        f"{max(0, e['needed'] - e['approved'])} to go"
                    ),
                )
            )
        others = [(label, e) for label, e in classes.items() if not e.get("needed") and (e["approved"] or e["pending"])]
        if others:
            text = " · ".join(f"{label} {e['approved']} approved, {e['pending']} pending" for label, e in others)
            parts.append(
                f"<div style='color:#555;font-size:0.85rem;margin:2px 0'>{escape('Not in the plan: ' + text)}</div>"
            )
    parts.append("</div>")
    return "".join(parts)


def show_class_progress(progress: dict[str, Any] | None) -> None:
    if not progress:
        return
    t = progress["totals"]
    st.markdown(f"**{t['approved']:,}** approved · **{t['pending']:,}** pending · **{t['rejected']:,}** rejected")
    if not any(e.get("needed") for classes in progress["classes"].values() for e in classes.values()):
        st.caption("No augmentation plan yet: the bars appear once the Augment page queues a plan.")
    st.html(class_progress_html(progress))


def annotator_frame(data: dict[str, Any], compact: bool = False) -> pd.DataFrame:
    rows = []
    for r in data.get("annotators", []):
        row = {
            "annotator": r["user"],
            "decisions today": r["decisions_today"],
            "per hour": r["per_hour"],
            "agreement with majority": r["agreement_with_majority"],
            "leased now": r["leased"],
        }
        if not compact:
            row.update({"compared": r["compared_with_majority"], "undone today": r["undone_today"]})
        rows.append(row)
    return pd.DataFrame(rows)


def annotators_html(data: dict[str, Any]) -> str:
    """A narrow table for the Review page's side column (a data grid there scrolls sideways)."""
    head = ("annotator", "today", "per hour", "agrees", "leased")
    cells = "".join(
        "<tr>"
        + "".join(
            f"<td style='padding:3px 6px;text-align:{'left' if i == 0 else 'right'}'>{escape(str(v))}</td>"
            for i, v in enumerate(
                (
                    r["user"],
                    r["decisions_today"],
                    "—" if r["per_hour"] is None else f"{r['per_hour']:.0f}",
                    "—" if r["agreement_with_majority"] is None else f"{100 * r['agreement_with_majority']:.0f}%",
                    r["leased"],
                )
            )
        )
        + "</tr>"
        for r in data.get("annotators", [])
    )
    header = "".join(
        f"<th style='padding:3px 6px;text-align:{'left' if i == 0 else 'right'};color:#555;font-weight:600'>{h}</th>"
        for i, h in enumerate(head)
    )
    return (
        "<table style='width:100%;border-collapse:collapse;font-size:0.95rem'>"
        f"<thead><tr>{header}</tr></thead><tbody>{cells}</tbody></table>"
        "<div style='color:#666;font-size:0.8rem;margin-top:4px'>per hour: while active today (after 2 min of "
        "work) · agrees: with the majority of the other voters, on variants with 2+ votes</div>"
    )


def show_annotators(data: dict[str, Any] | None, compact: bool = False) -> None:
    """Per annotator; `compact` (the Review page's side column) is a plain table that fits its width."""
    if not data:
        return
    if not data.get("annotators"):
        st.caption("No decisions yet.")
        return
    if compact:
        st.html(annotators_html(data))
        return
    frame = annotator_frame(data, compact)
    st.dataframe(
        frame,
        hide_index=True,
        width="stretch",
        column_config={
            "annotator": st.column_config.TextColumn("annotator", width="small"),
            "decisions today": st.column_config.NumberColumn("today", width="small", help="Decisions since 00:00 UTC"),
            "per hour": st.column_config.NumberColumn(
                "per hour",
                format="%.0f",
                width="small",
                help="Decisions per hour of active time today (pauses over 5 min left out; shown after 2 min)",
            ),
            "agreement with majority": st.column_config.ProgressColumn(
                "agrees",
                min_value=0.0,
                max_value=1.0,
                format="percent",
                width="small",
                help="Agreement with the majority: votes matching most of the other voters, on variants with 2+ votes",
            ),
            "leased now": st.column_config.NumberColumn("leased", width="small", help="Variants leased to them now"),
            "compared": st.column_config.NumberColumn("compared", help="Variants behind the agreement figure"),
        },
    )
