"""Progress people can act on, shown on the Review and Datasets pages: per class, approved variants against
what the augmentation plan found missing (large bars); per annotator, decisions today, pace and agreement."""

from __future__ import annotations

from html import escape
from typing import Any

import pandas as pd
import streamlit as st

ROW = (
    "<div style='display:flex;align-items:center;gap:10px;margin:4px 0'>"
    "<div style='width:9.5em;overflow:hidden;text-overflow:ellipsis;white-space:nowrap'>{label}</div>"
    "<div style='flex:1;background:#e6eaee;border-radius:7px;height:20px;min-width:60px'>"
    "<div style='width:{pct:.1f}%;background:{color};height:100%;border-radius:7px'></div></div>"
    "<div style='min-width:9.5em;text-align:right;font-weight:700'>{numbers}</div></div>"
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
                )
            )
            parts.append(
                "<div style='margin:-2px 0 4px 10.2em;color:#555;font-size:0.85rem'>"
                + escape(f"{e['pending']} pending · {e['rejected']} rejected · {max(0, e['needed'] - e['approved'])} to go")
                + "</div>"
            )
        others = [(label, e) for label, e in classes.items() if not e.get("needed") and (e["approved"] or e["pending"])]
        if others:
            text = " · ".join(f"{label} {e['approved']} approved, {e['pending']} pending" for label, e in others)
            parts.append(f"<div style='color:#555;font-size:0.85rem;margin:2px 0'>{escape('Not in the plan: ' + text)}</div>")
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


def annotator_frame(data: dict[str, Any]) -> pd.DataFrame:
    rows = [
        {
            "annotator": r["user"],
            "decisions today": r["decisions_today"],
            "per hour": r["per_hour"],
            "agreement with majority": r["agreement_with_majority"],
            "compared": r["compared_with_majority"],
            "undone today": r["undone_today"],
            "leased now": r["leased"],
        }
        for r in data.get("annotators", [])
    ]
    return pd.DataFrame(rows)


def show_annotators(data: dict[str, Any] | None) -> None:
    if not data:
        return
    frame = annotator_frame(data)
    if frame.empty:
        st.caption("No decisions yet.")
        return
    st.dataframe(
        frame,
        hide_index=True,
        width="stretch",
        column_config={
            "per hour": st.column_config.NumberColumn(
                "per hour", format="%.0f", help="Decisions per hour of active time today (pauses over 5 min left out)"
            ),
            "agreement with majority": st.column_config.ProgressColumn(
                "agrees with majority",
                min_value=0.0,
                max_value=1.0,
                format="percent",
                help="Votes matching the majority of the other voters, on variants with 2+ votes",
            ),
            "compared": st.column_config.NumberColumn("compared", help="Variants behind the agreement figure"),
        },
    )
