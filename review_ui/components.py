"""The UI's two custom components (Streamlit components v2: inline HTML/CSS/JS in the page, no build step).

- `review_cards`: the focused review list (static/review_cards.js); user text is set with textContent only.
- `session_cookie`: exchanges a one-time sign-in ticket for the HttpOnly session cookie, or clears it.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

STATIC = Path(__file__).parent / "static"

review_cards = st.components.v2.component(
    "augloop_review_cards",
    html="",
    css=(STATIC / "review_cards.css").read_text(encoding="utf-8"),
    js=(STATIC / "review_cards.js").read_text(encoding="utf-8"),
    isolate_styles=False,
)

SESSION_JS = """
export default function (component) {
  const { data, parentElement } = component;
  const done = parentElement.__done || (parentElement.__done = new Set());
  if (!data) return;
  const key = data.ticket ? "t:" + data.ticket : (data.sign_out ? "out:" + data.nonce : null);
  if (!key || done.has(key)) return;
  done.add(key);
  if (data.ticket) {
    fetch("/_augloop/session", {method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json"}, body: JSON.stringify({ticket: data.ticket})});
  } else {
    fetch("/_augloop/session", {method: "DELETE", credentials: "same-origin"});
  }
}
"""

session_cookie = st.components.v2.component("augloop_session_cookie", js=SESSION_JS, html="")
