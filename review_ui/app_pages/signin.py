"""Sign in with an API token (from `augloop token create` or an admin's Tokens page)."""

from __future__ import annotations

import streamlit as st

from review_ui import sessions
from review_ui.client import ApiError, api_url
from review_ui.render import plain
from review_ui.state import api_client, show_flash, signed_in_as

st.title("augloop review")
show_flash()  # why the last session ended, if it was refused
st.write(
    "Sign in with your API token. It stays in the UI server's memory: never in the URL, never on disk. "
    "A reload keeps you signed in (an HttpOnly session cookie), until you sign out or the session expires."
)
with st.form("signin"):
    token = st.text_input("API token", type="password", key="token_input")
    submitted = st.form_submit_button("Sign in", type="primary")
if submitted:
    if not token.strip():
        st.error("Paste your token first.")
    else:
        try:
            me = api_client(token.strip()).me()
        except ApiError as err:
            if err.status == 401:
                st.error("That token was refused (invalid, expired or revoked).")
            elif err.status == 429:  # the API's limit on failed sign-ins from one address
                wait = f"Too many refused tokens from this browser; wait a minute, then try again ({err.detail})"
                st.error(plain(wait))
            else:
                st.error(plain(str(err)))
        else:
            st.session_state["token"] = token.strip()
            signed_in_as(me)
            sid, ticket = sessions.open_session(token.strip(), me)
            st.session_state["_sid"] = sid
            st.session_state["_cookie_action"] = {"ticket": ticket}  # the browser trades it for the cookie
            st.rerun()
st.caption(f"API: {api_url()}")
