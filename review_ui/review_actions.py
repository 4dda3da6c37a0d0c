"""What the Review page's Streamlit buttons do (bulk by filter, paging); the cards' own keys and buttons are
handled by review_ui/review_flow.py. These run as callbacks, before the page re-renders; the outcome is
reported through `flash`."""

from __future__ import annotations

from typing import Any

import streamlit as st

from review_ui.client import ApiError
from review_ui.render import plain, quantity
from review_ui.state import client, flash


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
                f"The selection changed: it now holds {quantity(err.body['matched'], 'pending variant')} you "
                f"have not voted on, not {expected}. Nothing was changed; check and confirm again.",
            )
            st.session_state.pop("bulk_count", None)
        else:
            flash("error", plain(str(err)))
        return
    statuses = ", ".join(f"{n} {status}" for status, n in sorted(result.get("statuses", {}).items()))
    flash("success", f"Bulk {decision}: {quantity(result['applied'], 'variant')} ({statuses or 'none changed'}).")
    st.session_state.pop("bulk_count", None)
    st.session_state.pop("bulk_confirm", None)
    reload_view()  # the cards on screen changed a lot


def count_matching(dataset: str, filter_body: dict[str, Any], signature: str) -> None:
    # Counted per decision: an approval passes over texts a person wrote (approved one by one, read), a rejection
    # does not; with the approval's count "Reject all" was refused (409) whenever the filter held one.
    try:
        approve = client().bulk(dataset, {"decision": "approve", "filter": filter_body, "confirm": False})
        reject = client().bulk(
            dataset, {"decision": "reject", "reason": "unspecified", "filter": filter_body, "confirm": False}
        )
    except ApiError as err:
        flash("error", plain(str(err)))
        return
    held = (reject.get("skipped") or {}).get("leased_to_others", 0)  # leased to other annotators: theirs
    st.session_state["bulk_count"] = (signature, approve["matched"], reject["matched"], held)
    st.session_state.pop("bulk_confirm", None)


def set_page(page: int) -> None:
    st.session_state["page"] = max(1, page)


def reload_view() -> None:
    """Fetch the cards again (a new batch when work is shared out, the current page otherwise)."""
    st.session_state["review_reload"] = st.session_state.get("review_reload", 0) + 1
