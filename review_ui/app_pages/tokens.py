"""Tokens (admins): who may use the API and the UI; a new token is shown once."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from review_ui.render import plain
from review_ui.state import admin_page, call, call_and_flash, client


def revoke() -> None:
    token_id = st.session_state["revoke_pick"]  # read at click time: the choice may have changed since render
    call_and_flash(f"Revoked token {token_id}.", client().revoke_token, token_id)


admin_page("Tokens")
with st.form("new_token", clear_on_submit=True):
    name = st.text_input("User name")
    role = st.selectbox("Role", ["annotator", "admin"])
    days = st.number_input("Expires after (days, 0: never)", min_value=0.0, max_value=3650.0, value=0.0)
    go = st.form_submit_button("Create token", type="primary")
issued = call(client().create_token, name.strip(), role, days or None) if go else None
if issued is not None:
    st.success(plain(f"Token for {issued['name']} ({issued['role']}). Copy it now: it is not shown again."))
    st.code(issued["token"], language=None)
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
