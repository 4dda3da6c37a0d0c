"""The review UI: sign in with an API token, then the pages your role allows. Run with `augloop ui`.

The token is kept in this browser session's state only (never in the URL, never on disk); every page talks to
the API through review_ui/client.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `streamlit run review_ui/app.py` puts review_ui/ on sys.path, not the project root.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from review_ui.state import user  # noqa: E402

PAGES = Path(__file__).parent / "app_pages"

st.set_page_config(page_title="augloop review", page_icon=":material/fact_check:", layout="wide")


def sign_out() -> None:
    for key in list(st.session_state.keys()):
        del st.session_state[key]


if not st.session_state.get("token"):
    page = st.navigation([st.Page(PAGES / "signin.py", title="Sign in", icon=":material/key:", default=True)])
else:
    who = user()
    common = [
        st.Page(PAGES / "review.py", title="Review", icon=":material/fact_check:", default=True),
        st.Page(PAGES / "datasets.py", title="Datasets", icon=":material/bar_chart:"),
        st.Page(PAGES / "augment.py", title="Augment", icon=":material/auto_awesome:"),
        st.Page(PAGES / "jobs.py", title="Jobs", icon=":material/settings:"),
        st.Page(PAGES / "training.py", title="Training", icon=":material/model_training:"),
        st.Page(PAGES / "impact.py", title="Impact", icon=":material/insights:"),
    ]
    admin = (
        [st.Page(PAGES / "tokens.py", title="Tokens", icon=":material/key:")]
        if who.get("role") == "admin"
        else []
    )
    page = st.navigation({"Work": common, **({"Admin": admin} if admin else {})})
    with st.sidebar:
        st.caption(f"Signed in as {who.get('name', '?')} ({who.get('role', '?')})")
        st.button("Sign out", on_click=sign_out, key="sign_out")
page.run()
