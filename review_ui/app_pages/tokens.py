"""Tokens (admins): who may use the API and the UI; a new token is shown once."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from review_ui.render import plain
from review_ui.state import (
    admin_page,
    call,
    call_and_flash,
    client,
    double_clicks_tail,
    drop_kept,
    kept,
    submit_key,
    submit_once,
)


def revoke() -> None:
    token_id = st.session_state["revoke_pick"]  # read at click time: the choice may have changed since render
    call_and_flash(f"Revoked token {token_id}.", client().revoke_token, token_id)


def hide_issued() -> None:
    drop_kept("token")


admin_page("Tokens")
# A fresh, empty form once a token is made: its fields' keys carry the form's generation (the form's own
# clear_on_submit emptied the fields before a double click's second submission, which then came with no name)
form = submit_key("token")
with st.form(form + "_form"):
    name = st.text_input("User name", key=form + "_name")
    role = st.selectbox("Role", ["annotator", "admin"], key=form + "_role")
    days = st.number_input("Expires after (days, 0: never)", 0.0, 3650.0, 0.0, key=form + "_days")
    go = st.form_submit_button("Create token", type="primary", key=form)
if go and not name.strip() and double_clicks_tail("token"):
    pass  # the second click of a double click, on the form drawn anew: nothing to say
elif go and not name.strip():
    st.error("Type the user name the token is for.")
elif go:
    api = client()
    # Kept until hidden or the next token (never lost to a run that a second click cuts short)
    submit_once("token", api.create_token, name.strip(), role, days or None, keep="token")
    st.rerun()
if issued := kept("token"):
    st.success(plain(f"Token for {issued['name']} ({issued['role']}). Copy it now: it is not shown again."))
    st.code(issued["token"], language=None)
    st.button("I have copied it: hide the token", on_click=hide_issued, key="hide_issued")
tokens = call(client().tokens) or []
if tokens:
    frame = pd.DataFrame(tokens)  # state: active, expired or revoked, as the API decides it
    st.dataframe(
        frame[["id", "name", "role", "prefix", "state", "created_at", "expires_at", "last_used_at"]],
        hide_index=True,
        width="stretch",
    )
    active = [t for t in tokens if t["state"] != "revoked"]
    if active:
        pick = st.selectbox(
            "Token to revoke",
            [t["id"] for t in active],
            key="revoke_pick",
            format_func=lambda i: next(f"{t['id']} · {t['name']} · {t['prefix']}…" for t in active if t["id"] == i),
        )
        st.button(f"Revoke token {pick}", on_click=revoke, key="revoke_btn")
