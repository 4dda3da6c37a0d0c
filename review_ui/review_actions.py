"""What the Review page's buttons do. They run as Streamlit callbacks, before the page re-renders, so the
queue the annotator sees next already reflects the decision; the outcome is reported through `flash`."""

from __future__ import annotations

from typing import Any

import streamlit as st

from review_ui.client import ApiError
from review_ui.render import plain
from review_ui.state import client, flash

DONE = {"approve": "approved", "reject": "rejected", "edit": "edited and approved"}


def _conflict_message(sample_id: int, err: ApiError) -> str:
    current = err.body.get("current") or {}
    last = current.get("last_review") or {}
    who = f" by {plain(str(last.get('user')))}" if last.get("user") else ""
    return (
        f"Someone else decided first: variant #{sample_id} is now **{current.get('review_status')}**{who} "
        f"(version {current.get('version')}). The queue below shows its current state; decide again if "
        f"you still disagree."
    )


def decide(sample_id: int, version: int, decision: str) -> None:
    reason = st.session_state.get(f"reason_{sample_id}") if decision == "reject" else None
    text = st.session_state.get(f"edit_{sample_id}_{version}") if decision == "edit" else None
    try:
        result = client().decide(sample_id, decision, version, reason=reason, text=text)
    except ApiError as err:
        if err.status == 409 and "current" in err.body:
            flash("warning", _conflict_message(sample_id, err))
        else:
            flash("error", plain(str(err)))
        return
    waiting = " (waiting for more reviews)" if result.get("review_status") == "pending" else ""
    flash("success", f"Variant #{sample_id} {DONE[decision]}{waiting}.")
    st.session_state.pop(f"sel_{sample_id}", None)


def bulk(dataset: str, selection: dict[str, Any], decision: str, expected: int) -> None:
    """Apply one decision to a selection (ids, a family or a filter) the user saw counted as `expected`."""
    body: dict[str, Any] = {"decision": decision, "confirm": True, "expected_count": expected, **selection}
    if decision == "reject":
        body["reason"] = st.session_state.get("bulk_reason", "other")
    try:
        result = client().bulk(dataset, body)
    except ApiError as err:
        if err.status == 409 and "matched" in err.body:
            flash(
                "warning",
                f"The selection changed: it now holds {err.body['matched']} pending variants you "
                f"have not voted on, not {expected}. Nothing was changed; check and confirm again.",
            )
            st.session_state.pop("bulk_count", None)
        else:
            flash("error", plain(str(err)))
        return
    statuses = ", ".join(f"{n} {status}" for status, n in sorted(result.get("statuses", {}).items()))
    flash("success", f"Bulk {decision}: {result['applied']} variants ({statuses or 'none changed'}).")
    for sample_id in selection.get("sample_ids") or []:
        st.session_state.pop(f"sel_{sample_id}", None)
    st.session_state.pop("bulk_count", None)
    st.session_state.pop("bulk_confirm", None)
    st.session_state["progress_refresh"] = (
        st.session_state.get("progress_refresh", 0) + 1
    )  # numbers moved a lot


def bulk_selected(dataset: str, page_ids: list[int], decision: str) -> None:
    """The variants ticked on this page, read when the button is pressed."""
    selected = [i for i in page_ids if st.session_state.get(f"sel_{i}")]
    if selected:
        bulk(dataset, {"sample_ids": selected}, decision, len(selected))


def count_matching(dataset: str, filter_body: dict[str, Any], signature: str) -> None:
    try:
        result = client().bulk(dataset, {"decision": "approve", "filter": filter_body, "confirm": False})
    except ApiError as err:
        flash("error", plain(str(err)))
        return
    st.session_state["bulk_count"] = (signature, result["matched"])
    st.session_state.pop("bulk_confirm", None)


def set_page(page: int) -> None:
    st.session_state["page"] = max(1, page)
