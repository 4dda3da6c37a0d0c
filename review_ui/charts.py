"""The data behind the training and impact charts, in long form: one row per point, with the task (or task and
class) as a value in its own column, never as a column name. Task and class names come from datasets, so any
of them ("epoch", "overall", "a / b") is a name like any other and cannot collide with the chart's own columns
or with another task's series."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

# The val macro-F1 curve: which curve key is which overall series. Every per-task series is named
# TASK_SERIES.format(task), which none of these starts with.
OVERALL_SERIES = {"val_macro_f1": "overall", "plain_val_macro_f1": "overall, plain weights"}
TASK_SERIES = "task: {}"
F1 = "val macro-F1"
DELTA = "Δ F1 (points)"


def f1_curve(curve: list[dict[str, Any]]) -> pd.DataFrame:
    """Columns epoch, series, val macro-F1: the overall score per epoch (and the plain weights' score of a run
    that validates a moving average), then each task's. Empty when the curve has no val scores."""
    rows = []
    for entry in curve:
        for key, series in OVERALL_SERIES.items():
            if entry.get(key) is not None:
                rows.append({"epoch": entry.get("epoch"), "series": series, F1: entry[key]})
        for task, score in (entry.get("val_task_macro_f1") or {}).items():
            if score is not None:
                rows.append({"epoch": entry.get("epoch"), "series": TASK_SERIES.format(task), F1: score})
    return pd.DataFrame(rows, columns=["epoch", "series", F1])


def class_labels(keys: list[tuple[Any, Any]]) -> list[str]:
    """One label per distinct (task, class): "task / class", or, when two of those would read the same (a task
    "a / b" with class "c" and a task "a" with class "b / c"), every pair quoted as Python writes it."""
    labels = [f"{task} / {name}" for task, name in keys]
    if len(set(labels)) < len(labels):
        labels = [f"{task!r} / {name!r}" for task, name in keys]
    return labels


def impact_deltas(result: dict[str, Any]) -> pd.DataFrame:
    """Delta in F1 points per task/class (rows, one label each) and arm (columns), for the bar chart."""
    # a class no test text holds has no Δ to draw (its F1 measures no recall)
    rows = [r for r in result.get("rows", []) if r.get("delta") is not None and r.get("support") != 0]
    if not rows:
        return pd.DataFrame()
    keys = list(dict.fromkeys((r["task"], r["class"]) for r in rows))
    label = dict(zip(keys, class_labels(keys), strict=True))
    frame = pd.DataFrame(
        [{"class": label[(r["task"], r["class"])], "arm": str(r["arm"]), DELTA: r["delta"] * 100} for r in rows]
    )
    # one value per class and arm (a report holds each once; a repeated row must not end in a traceback)
    wide = frame.groupby(["class", "arm"], sort=False)[DELTA].first().unstack("arm")
    return wide.reindex(index=list(dict.fromkeys(frame["class"])), columns=list(dict.fromkeys(frame["arm"])))


def curve_charts(curve: list[dict[str, Any]]) -> None:
    """A run's loss, val macro-F1 (overall and per task) and learning rate per epoch, each on its own axis."""
    if not curve:
        return
    frame = pd.DataFrame(curve)
    columns = st.columns(3)
    with columns[0]:
        st.caption("Training loss")
        if "train_loss" in frame:
            st.line_chart(frame, x="epoch", y="train_loss", y_label="loss", height=220)
    with columns[1]:
        st.caption("Val macro-F1 (overall and per task)")
        # a short run validates its weights' moving average; its curve also holds the plain weights' score
        f1 = f1_curve(curve)
        if not f1.empty:
            st.line_chart(f1, x="epoch", y=F1, color="series", y_label="macro-F1", height=220)
    with columns[2]:
        st.caption("Learning rate (end of epoch)")
        if "lr" in frame:
            st.line_chart(frame, x="epoch", y="lr", y_label="learning rate", height=220)
