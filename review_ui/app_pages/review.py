"""Review: one card in focus, decided from the keyboard, redrawn alone.

Keys: J/K or arrows move, A approves, X rejects (with the reason 1–6 picked, else stored as "unspecified"),
E edits, F approves the family, U or Backspace undoes your last decision, S selects. The cards are a component
(review_ui/static/review_cards.js) inside an st.fragment: a decision reruns only that fragment and the
component redraws only the card that changed. User texts are set as text, never as HTML or markdown, and so
are the guidelines (a project's leads write them: rendered, a markdown image would load from anywhere).
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import streamlit as st

from review_ui import review_actions as act
from review_ui import sessions
from review_ui.client import ApiError
from review_ui.components import review_cards
from review_ui.progress import show_annotators, show_class_progress
from review_ui.render import plain, quantity
from review_ui.review_flow import COMPONENT_KEY, VIEW_KEY, ReviewView, handle_outbox, load_view, payload
from review_ui.state import call, client, give_back_typed, leads, pick_dataset, remember_typed, show_flash

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
METHODS = [
    "backtranslation",
    "mlm",
    "wordnet",
    "paraphrase",
]  # workers/augment/catalog.py; others found in the data join
ANY = "(any)"
PAGE_SIZE = 50
SEARCH_MAX_CHARS = 200  # what the API accepts (db/review_filter.py)
FILTER_KEYS = ("f_status", "f_task", "f_label", "f_method", "f_sim", "f_cons", "f_flag", "f_q", "f_sort")
LIVE_SECONDS = 15  # how often the progress panel refreshes itself
RENEW_SECONDS = 60  # how often leases are renewed while the page is open


def sidebar_filters(dataset: dict[str, Any], methods: list[str]) -> dict[str, Any]:
    """The queue filter as API query parameters; an untouched control sends nothing."""
    # Streamlit forgets a widget's value once a page is shown without it: the filters are kept under keys of
    # their own and given back when the Review page comes back (the Datasets page and back reset them all).
    give_back_typed(FILTER_KEYS)
    sb = st.sidebar
    status = sb.selectbox("Status", ["pending", "approved", "rejected"], key="f_status")
    tasks = [t["name"] for t in dataset["tasks"]]
    task = sb.selectbox("Task", [ANY, *tasks], key="f_task")
    labels = next((t["labels"] for t in dataset["tasks"] if t["name"] == task), None)
    if labels is None:
        labels = sorted({lab for t in dataset["tasks"] for lab in t["labels"]})
    label = sb.selectbox("Class", [ANY, *labels], key="f_label")
    chosen_methods = sb.multiselect("Method", methods, key="f_method")
    # Ranges start whole; a value restored after a reload (review_ui/sessions.py) is already in the state.
    st.session_state.setdefault("f_sim", (0.0, 1.0))
    st.session_state.setdefault("f_cons", (0.0, 1.0))
    similarity = sb.slider("Similarity to the source", 0.0, 1.0, step=0.05, key="f_sim")
    consistency = sb.slider("Label consistency", 0.0, 1.0, step=0.05, key="f_cons")
    flagged = sb.selectbox("Label model", ["any", "flagged only", "not flagged"], key="f_flag")
    q = sb.text_input("Search text", key="f_q", max_chars=SEARCH_MAX_CHARS).strip()
    sort = sb.selectbox("Sort", list(SORTS), format_func=SORTS.get, key="f_sort")
    remember_typed(FILTER_KEYS)
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
        for k in ("task", "label", "min_similarity", "max_similarity", "min_consistency", "max_consistency", "q")
        if params.get(k) is not None
    }
    if params.get("method"):
        body["method"] = params["method"].split(",")
    if params.get("flagged"):
        body["flagged"] = params["flagged"] == "true"
    return body


def show_agreement(dataset: str) -> None:
    box = st.expander("Agreement between annotators (kappa, alpha)", key="agreement_open", on_change="rerun")
    with box:
        if not box.open:
            return
        data = call(client().agreement, dataset)
        if not data:
            return
        overall = data["overall"]
        alpha = overall["alpha"]
        st.metric("Krippendorff's alpha (keep vs drop)", "n/a" if alpha is None else f"{alpha:.2f}")
        st.caption(
            f"{quantity(overall['units_multi'], 'variant')} with 2+ reviews, "
            f"{quantity(overall['ratings'], 'review')} in all"
        )
        if overall["pairs"]:
            st.dataframe(overall["pairs"], hide_index=True, width="stretch")


def bulk_by_filter(dataset: str, params: dict[str, Any], reasons: list[str]) -> None:
    with st.expander("Bulk: decide everything matching this filter", key="bulk_open"):
        st.selectbox(
            "Reason for a bulk rejection", reasons, key="bulk_reason", format_func=lambda r: r.replace("_", " ")
        )
        body = filter_body(params)
        # the dataset is part of what was counted: one dataset's count was offered on another (same filter)
        signature = hashlib.sha1(json.dumps([dataset, body], sort_keys=True).encode()).hexdigest()[:12]
        st.button(
            "Count everything matching this filter",
            key="bulk_count_btn",
            on_click=act.count_matching,
            args=(dataset, body, signature),
        )
        counted = st.session_state.get("bulk_count")
        if counted and counted[0] == signature:
            approvable, n, held = counted[1], counted[2], counted[3]
            st.write(
                f"{quantity(n, 'pending variant matches', 'pending variants match')} this filter "
                "(leaving out those you already voted on)."
            )
            if held:
                st.write(
                    f"{quantity(held, 'more is', 'more are')} leased to other annotators, who are reviewing "
                    f"{'it' if held == 1 else 'them'} (the work is shared out): a bulk decision leaves "
                    f"{'it' if held == 1 else 'them'} to them."
                )
            if approvable < n:
                st.write(
                    f"Approving takes {approvable} of them and passes over {n - approvable} written or submitted "
                    "by a person (approve those one by one, having read them; your own submission's, not at all)."
                )
            if n:
                sure = st.checkbox(f"I confirm a decision on all {n}", key="bulk_confirm")
                c1, c2 = st.columns(2)
                c1.button(
                    f"Approve all {approvable}",
                    key="bulk_all_ok",
                    disabled=not sure or not approvable,
                    type="primary",
                    on_click=act.bulk,
                    args=(dataset, {"filter": body}, "approve", approvable),
                )
                c2.button(
                    f"Reject all {n}",
                    key="bulk_all_no",
                    disabled=not sure,
                    on_click=act.bulk,
                    args=(dataset, {"filter": body}, "reject", n),
                )


@st.fragment(run_every=LIVE_SECONDS)
def live_panel(name: str, distributing: bool) -> None:
    """Per-class and per-annotator progress, refreshed every LIVE_SECONDS; keeps this annotator's leases."""
    api = client()
    renew_due = time.monotonic() - st.session_state.get("_renewed_at", 0.0) > RENEW_SECONDS
    if distributing and renew_due and call(api.renew_leases, name) is not None:
        st.session_state["_renewed_at"] = time.monotonic()
    progress = call(api.progress, name)
    st.session_state["_progress"] = progress
    # An empty view holds nothing of the annotator's: when the pending count moves beside it (an augmentation
    # job landed its variants), the whole page runs again and reads the queue again (a view with cards stays).
    view: ReviewView | None = st.session_state.get(VIEW_KEY)
    pending = ((progress or {}).get("totals") or {}).get("pending")
    if view is not None and not view.order and pending is not None:
        if view.pending_seen is None:
            view.pending_seen = pending
        elif pending != view.pending_seen:
            view.pending_seen = pending
            st.rerun(scope="app")
    st.subheader("Progress toward the plan")
    show_class_progress(progress)
    st.subheader("Annotators")
    show_annotators(call(api.annotators, name), compact=True)
    st.caption(f"Updated every {LIVE_SECONDS} s.")


@st.fragment
def cards(empty: str) -> None:
    """The review cards: a decision reruns this fragment only (handle_outbox runs first, as its callback)."""
    view: ReviewView | None = st.session_state.get(VIEW_KEY)
    if view is None:  # the session ended in handle_outbox (signed out in another tab): show the sign-in page
        st.rerun(scope="app")
    # As a JSON string: Streamlit walks a dict's every value looking for dataframes (18 ms for 50 cards)
    data = json.dumps(payload(view, empty), separators=(",", ":"))
    review_cards(key=COMPONENT_KEY, data=data, on_outbox_change=handle_outbox)


def page_caption(view: ReviewView, base: str, page: int, distributing: bool) -> str:
    decide = f"{quantity(view.reviews_required, 'review decides', 'reviews decide')} a variant"
    if distributing:
        until = (view.leased_until or "")[11:16]
        return (
            f"Your share: {quantity(len(view.order), 'variant')} leased to you until {until} UTC (renewed while "
            f"you work); {decide}."
        )
    if page == 1:
        matched = f"{view.total}+" if view.total_capped else str(view.total)
        st.session_state.setdefault("_first_total", {})[base] = matched
    else:  # as counted on the first page: counting ahead from each page would change it from page to page
        matched = st.session_state.setdefault("_first_total", {}).get(base) or "more"
    return f"{quantity(matched, 'variant matches', 'variants match')} · page {page} · {decide}"


st.title("Review")
show_flash()
api = client()
dataset = pick_dataset(st.sidebar)
if dataset is None:
    st.stop()
name = dataset["name"]
methods = sorted(set(METHODS) | set((st.session_state.get("_progress") or {}).get("by_method", {})) - {"unknown"})
params = sidebar_filters(dataset, methods)
sessions.remember(
    st.session_state.get("_sid"), filters={k: st.session_state.get(k) for k in FILTER_KEYS}, current_dataset=name
)
distributing = bool(dataset.get("distribute_work")) and params["status"] == "pending"
base = json.dumps([name, params, distributing], sort_keys=True)
if st.session_state.get("_filter_sig") != base:  # a new filter starts at its first page
    st.session_state["_filter_sig"] = base
    st.session_state["page"] = 1
page = st.session_state.get("page", 1)
signature = f"{base}|{page}|{st.session_state.get('review_reload', 0)}"
view: ReviewView | None = st.session_state.get(VIEW_KEY)
# An empty view is read again on every run of the whole page (coming back to Review, "Check again", the live
# panel seeing new pending work): it holds no cards, focus or page of the annotator's. A view with cards is
# kept until the filter, the page or "Next batch" asks for another.
if view is None or view.signature != signature or not view.order:
    share = {"filter": filter_body(params), "sort": params["sort"], "size": PAGE_SIZE} if distributing else None
    try:
        fresh = load_view(api, name, signature, params, page, PAGE_SIZE, share=share)
    except ApiError as err:
        st.error(plain(str(err)))
        st.stop()
    # The component keeps its outbox across views: what the last view acknowledged stays acknowledged.
    fresh.acked = view.acked if view is not None else 0
    st.session_state[VIEW_KEY] = view = fresh

main, side = st.columns([0.66, 0.34], gap="medium")
with side:
    live_panel(name, distributing)
    st.subheader("Guidelines")
    if guidelines := dataset.get("guidelines"):
        st.text(guidelines)
    else:
        st.caption("No guidelines yet: a lead of the project writes them on the Datasets page.")
    show_agreement(name)

with main:
    st.caption(page_caption(view, base, page, distributing))
    if not view.order:
        totals = (st.session_state.get("_progress") or {}).get("totals") or {}
        if not any(totals.values()) and leads(name):
            st.info(
                "No variants to review yet. Generate some on the Augment page: pick a method, preview the "
                "plan and queue it; the worker's variants land here."
            )
            st.page_link("app_pages/augment.py", label="Go to Augment", icon=":material/auto_awesome:")
        elif not any(totals.values()):  # an annotator cannot start augmentation: who can
            st.info("No variants to review yet: a lead of the project generates them on the Augment page.")
        else:
            st.info(
                "Nothing to review with these filters."
                if not distributing
                else "Nothing left to hand out with these filters: every pending variant is decided or leased."
            )
        st.button("Check again", key="check_again", on_click=act.reload_view)
        if page > 1:
            st.button("Back to the first page", on_click=act.set_page, args=(1,))
    else:
        left, mid, right = st.columns([1, 2, 1])
        if params["status"] == "pending":
            # Decided variants leave the pending queue, so "the next page" would skip as many pending ones:
            # the next batch is this page fetched again (what is still pending stays, new variants fill in).
            mid.button("Next batch ▶", key="next_batch", on_click=act.reload_view)
        else:
            left.button("◀ Previous", key="prev_top", disabled=page <= 1, on_click=act.set_page, args=(page - 1,))
            more = len(view.order) == PAGE_SIZE and (view.total_capped or view.total > page * PAGE_SIZE)
            right.button("Next ▶", key="next_top", disabled=not more, on_click=act.set_page, args=(page + 1,))
        cards("Nothing to review here.")
    bulk_by_filter(name, params, [*view.reasons, "unspecified"])
