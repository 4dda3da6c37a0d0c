"""Review: pending variants family by family; approve, reject with a reason, or edit then approve; in bulk.

Keys: A approves and X rejects the first variant of the page (with the reason chosen beside it), N and P turn
pages. User texts are rendered as text only (review_ui/render.py); the guidelines are admin-written markdown.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import pandas as pd
import streamlit as st

from review_ui import review_actions as act
from review_ui.render import plain, small_html, source_html, variant_html
from review_ui.state import call, client, pick_dataset, show_flash

SORTS = {
    "family": "Family by family",
    "-expected_value": "Most useful first",
    "age": "Oldest first",
    "-age": "Newest first",
    "-similarity": "Most similar first",
    "similarity": "Least similar first",
    "label_consistency": "Least label-consistent first",
    "-label_consistency": "Most label-consistent first",
    "-semantic_similarity": "Closest in meaning first",
    "semantic_similarity": "Furthest in meaning first",
}
METHODS = ["backtranslation", "mlm", "wordnet", "paraphrase"]  # workers/augment/catalog.py; others found in the data join
ANY = "(any)"
PAGE_SIZE = 50


@st.cache_data(ttl=15, show_spinner=False)
def progress_of(dataset: str, refresh: int) -> dict[str, Any] | None:
    """Per-class progress (the same for every user), kept 15 s: at 200k variants it takes most of a second."""
    return call(client().progress, dataset)


def sidebar_filters(dataset: dict[str, Any], methods: list[str]) -> dict[str, Any]:
    """The queue filter as API query parameters; an untouched control sends nothing."""
    sb = st.sidebar
    status = sb.selectbox("Status", ["pending", "approved", "rejected"], key="f_status")
    tasks = [t["name"] for t in dataset["tasks"]]
    task = sb.selectbox("Task", [ANY, *tasks], key="f_task")
    labels = next((t["labels"] for t in dataset["tasks"] if t["name"] == task), None)
    if labels is None:
        labels = sorted({lab for t in dataset["tasks"] for lab in t["labels"]})
    label = sb.selectbox("Class", [ANY, *labels], key="f_label")
    chosen_methods = sb.multiselect("Method", methods, key="f_method")
    similarity = sb.slider("Similarity to the source", 0.0, 1.0, (0.0, 1.0), 0.05, key="f_sim")
    consistency = sb.slider("Label consistency", 0.0, 1.0, (0.0, 1.0), 0.05, key="f_cons")
    flagged = sb.selectbox("Label model", ["any", "flagged only", "not flagged"], key="f_flag")
    q = sb.text_input("Search text", key="f_q").strip()
    sort = sb.selectbox("Sort", list(SORTS), format_func=SORTS.get, key="f_sort")
    return {
        "status": status,
        "task": None if task == ANY else task,
        "label": None if label == ANY else label,
        "method": ",".join(chosen_methods) or None,
        "min_similarity": similarity[0] if similarity[0] > 0 else None,
        "max_similarity": similarity[1] if similarity[1] < 1 else None,
        "min_consistency": consistency[0] if consistency[0] > 0 else None,
        "max_consistency": consistency[1] if consistency[1] < 1 else None,
        "flagged": {"flagged only": "true", "not flagged": "false"}.get(flagged),
        "q": q or None,
        "sort": sort,
    }


def filter_body(params: dict[str, Any]) -> dict[str, Any]:
    """The same filter in the bulk endpoint's JSON form (status aside: bulk acts on pending variants)."""
    body = {
        k: params[k]
        for k in (
            "task",
            "label",
            "min_similarity",
            "max_similarity",
            "min_consistency",
            "max_consistency",
            "q",
        )
        if params.get(k) is not None
    }
    if params.get("method"):
        body["method"] = params["method"].split(",")
    if params.get("flagged"):
        body["flagged"] = params["flagged"] == "true"
    return body


def show_progress(data: dict[str, Any] | None) -> None:
    if not data:
        return
    t = data["totals"]
    st.caption(f"Variants: {t['pending']} pending · {t['approved']} approved · {t['rejected']} rejected")
    for task, classes in data["classes"].items():
        rows = [
            {
                "class": label,
                "pending": e["pending"],
                "approved": e["approved"],
                "of plan": min(1.0, e["approved"] / e["needed"]) if e.get("needed") else None,
            }
            for label, e in classes.items()
        ]
        st.dataframe(
            pd.DataFrame(rows),
            hide_index=True,
            width="stretch",
            column_config={
                "class": st.column_config.TextColumn(task),  # the task names the column
                "of plan": st.column_config.ProgressColumn(
                    "of plan",
                    min_value=0.0,
                    max_value=1.0,
                    format="percent",
                    help="Approved variants against what the latest augmentation plan found missing",
                ),
            },
        )
    if st.button("Refresh progress", key="progress_btn"):
        st.session_state["progress_refresh"] = st.session_state.get("progress_refresh", 0) + 1
        st.rerun()


def show_agreement(dataset: str) -> None:
    box = st.expander("Agreement between annotators", key="agreement_open", on_change="rerun")
    with box:
        if not box.open:
            return
        data = call(client().agreement, dataset)
        if not data:
            return
        overall = data["overall"]
        alpha = overall["alpha"]
        st.metric("Krippendorff's alpha (keep vs drop)", "n/a" if alpha is None else f"{alpha:.2f}")
        st.caption(f"{overall['units_multi']} variants with 2+ reviews, {overall['ratings']} reviews in all")
        if overall["pairs"]:
            st.dataframe(pd.DataFrame(overall["pairs"]), hide_index=True)
        per_method = [
            {"method": m, "alpha": v["alpha"], "variants": v["units_multi"]}
            for m, v in data["by_method"].items()
        ]
        if per_method:
            st.dataframe(pd.DataFrame(per_method), hide_index=True)


def decision_buttons(
    places: tuple[Any, Any],
    labels: tuple[str, str],
    key: str,
    on_click: Callable[..., None],
    args: Callable[[str], tuple[Any, ...]],
    *,
    primary: bool = False,
    shortcuts: tuple[str | None, str | None] = (None, None),
    **options: Any,
) -> None:
    """An Approve and a Reject button, alike but for the decision: `key` has a {} for "ok" / "no", `args`
    gives the click's arguments for "approve" / "reject"; `primary` marks the approving one."""
    for place, label, decision, tag, shortcut in zip(
        places, labels, ("approve", "reject"), ("ok", "no"), shortcuts, strict=True
    ):
        place.button(
            label,
            key=key.format(tag),
            type="primary" if primary and decision == "approve" else "secondary",
            on_click=on_click,
            args=args(decision),
            shortcut=shortcut,
            **options,
        )


def bulk_bar(dataset: str, params: dict[str, Any], page_ids: list[int], reasons: list[str]) -> None:
    with st.container(border=True, key="bulk"):
        st.markdown("**Bulk decisions**")
        st.selectbox(
            "Reason for bulk rejections",
            reasons,
            key="bulk_reason",
            format_func=lambda r: r.replace("_", " "),
        )
        selected = [i for i in page_ids if st.session_state.get(f"sel_{i}")]
        decision_buttons(
            st.columns(2),
            (f"Approve selected ({len(selected)})", f"Reject selected ({len(selected)})"),
            "bulk_sel_{}",
            act.bulk_selected,
            lambda decision: (dataset, page_ids, decision),
            disabled=not selected,
        )
        if params["status"] != "pending":
            return
        body = filter_body(params)
        signature = hashlib.sha1(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]
        st.button(
            "Count everything matching this filter",
            key="bulk_count_btn",
            on_click=act.count_matching,
            args=(dataset, body, signature),
        )
        counted = st.session_state.get("bulk_count")
        if counted and counted[0] == signature:
            n = counted[1]
            st.write(f"{n} pending variants match this filter (leaving out those you already voted on).")
            if n:
                sure = st.checkbox(f"I confirm a decision on all {n}", key="bulk_confirm")
                decision_buttons(
                    st.columns(2),
                    (f"Approve all {n}", f"Reject all {n}"),
                    "bulk_all_{}",
                    act.bulk,
                    lambda decision: (dataset, {"filter": body}, decision, n),
                    primary=True,
                    disabled=not sure,
                )


def variant_card(
    family_text: str | None, v: dict[str, Any], reasons: list[str], focus: bool, required: int
) -> None:
    vid, version = v["id"], v["version"]
    with st.container(border=True, key=f"variant-{vid}"):
        pick, body, actions = st.columns([0.04, 0.56, 0.40], vertical_alignment="top")
        pick.checkbox("Select", key=f"sel_{vid}", label_visibility="collapsed")
        with body:
            st.html(variant_html(family_text, v))
            votes = v.get("votes") or {}
            state = f"#{vid} · {v['review_status']} · version {version}"
            if required > 1 or votes.get("approve") or votes.get("reject"):
                state += (
                    f" · votes: {votes.get('approve', 0)} keep, {votes.get('reject', 0)} drop of {required}"
                )
                if votes.get("mine"):
                    state += f" (yours: {votes['mine']})"
            st.html(small_html(state))
        with actions:
            decision_buttons(
                st.columns(2),
                ("Approve", "Reject"),
                f"{{}}_{vid}_{version}",
                act.decide,
                lambda decision: (vid, version, decision),
                primary=True,
                shortcuts=("A", "X") if focus else (None, None),
                width="stretch",
            )
            st.selectbox(
                "Reason",
                reasons,
                key=f"reason_{vid}",
                label_visibility="collapsed",
                format_func=lambda x: x.replace("_", " "),
            )
            with st.popover("Edit then approve", width="stretch", key=f"pop_{vid}"):
                st.text_area("Edited text", value=v["text"], key=f"edit_{vid}_{version}", height=120)
                st.button(
                    "Save and approve",
                    key=f"save_{vid}_{version}",
                    type="primary",
                    on_click=act.decide,
                    args=(vid, version, "edit"),
                )


def family_block(
    dataset: str,
    key: str,
    family: dict[str, Any] | None,
    variants: list[dict[str, Any]],
    reasons: list[str],
    focus_id: int | None,
    required: int,
) -> None:
    with st.container(border=True, key=f"family-{key}"):
        if family is not None:
            head, buttons = st.columns([0.7, 0.3])
            head.html(source_html(family))
            n = family["pending_variants"]
            if n:
                decision_buttons(
                    (buttons, buttons),
                    (f"Approve family ({n})", f"Reject family ({n})"),
                    f"fam_{{}}_{family['id']}",
                    act.bulk,
                    lambda decision: (dataset, {"parent_id": family["id"]}, decision, n),
                    width="stretch",
                )
        for v in variants:
            variant_card(family["text"] if family else None, v, reasons, v["id"] == focus_id, required)


def pager(page: int, pages: int, more: bool, where: str) -> None:
    left, mid, right = st.columns([1, 2, 1])
    left.button(
        "◀ Previous",
        key=f"prev_{where}",
        disabled=page <= 1,
        on_click=act.set_page,
        args=(page - 1,),
        shortcut="P" if where == "top" else None,
    )
    mid.caption(f"Page {page} of {pages}{'+' if more else ''}")
    right.button(
        "Next ▶",
        key=f"next_{where}",
        disabled=page >= pages and not more,
        on_click=act.set_page,
        args=(page + 1,),
        shortcut="N" if where == "top" else None,
    )


st.title("Review")
show_flash()
api = client()
dataset = pick_dataset(st.sidebar)
if dataset is None:
    st.stop()
name = dataset["name"]
progress = progress_of(name, st.session_state.get("progress_refresh", 0))
methods = sorted(set(METHODS) | set((progress or {}).get("by_method", {})) - {"unknown"})
params = sidebar_filters(dataset, methods)
signature = json.dumps([name, params], sort_keys=True)
if st.session_state.get("_filter_sig") != signature:  # a new filter starts at its first page
    st.session_state["_filter_sig"] = signature
    st.session_state["page"] = 1
page = st.session_state.get("page", 1)
queue = call(api.review_queue, name, page=page, page_size=PAGE_SIZE, **params)
if queue is None:
    st.stop()

main, side = st.columns([0.64, 0.36], gap="medium")
with side:
    st.subheader("Guidelines")
    st.markdown(
        dataset.get("guidelines") or "_No guidelines yet: an admin writes them on the Datasets page._"
    )
    st.subheader("Progress per class")
    show_progress(progress)
    show_agreement(name)

with main:
    total = queue["total"]
    pages = max(1, -(-total // PAGE_SIZE))
    required = queue["reviews_required"]
    st.caption(
        f"{total}{'+' if queue['total_capped'] else ''} variants match · {required} review(s) decide a "
        f"variant"
        + (" · showing only variants you have not voted on" if queue["not_reviewed_by_me"] else "")
        + " · keys: A approve, X reject the first variant; N/P next/previous page"
    )
    items = queue["items"]
    if not items:
        st.info("Nothing to review with these filters.")
        if page > 1:
            st.button("Back to the first page", on_click=act.set_page, args=(1,))
        st.stop()
    bulk_bar(name, params, [v["id"] for v in items], queue["reject_reasons"])
    pager(page, pages, queue["total_capped"], "top")
    families = {f["id"]: f for f in queue["families"]}
    groups: dict[int | None, list[dict[str, Any]]] = {}
    for v in items:
        groups.setdefault(v["parent_id"], []).append(v)
    focus = items[0]["id"]
    for parent_id, variants in groups.items():
        family_block(
            name,
            str(parent_id),
            families.get(parent_id) if parent_id is not None else None,
            variants,
            queue["reject_reasons"],
            focus,
            required,
        )
    pager(page, pages, queue["total_capped"], "bottom")
    st.caption(plain(f"{len(items)} variants on this page"))
