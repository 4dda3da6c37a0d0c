"""The review UI: sign in with an API token, then the pages your role allows. Run with `augloop ui`.

The token lives in this UI server's memory only (never in the URL, never on disk). A reload keeps you signed in
through an HttpOnly session cookie that holds a signed random id, not the token (review_ui/sessions.py), and
restores your filters. Every page talks to the API through review_ui/client.py.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

# `streamlit run review_ui/app.py` puts review_ui/ on sys.path, not the project root.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402
from streamlit.runtime.scriptrunner_utils.exceptions import StopException  # noqa: E402

from review_ui import sessions  # noqa: E402
from review_ui.client import ApiError  # noqa: E402
from review_ui.components import session_cookie  # noqa: E402
from review_ui.render import plain  # noqa: E402
from review_ui.state import (  # noqa: E402
    api_client,
    end_flash,
    end_refused_session,
    refresh_user,
    session_ended,
    signed_in_as,
    user,
)

PAGES = Path(__file__).parent / "app_pages"

# an emoji: a material icon as the favicon is fetched from fonts.gstatic.com (a request to Google on every page
# load, and none at all on a machine without internet); the navigation's icons come with Streamlit
st.set_page_config(page_title="augloop review", page_icon="✅", layout="wide")
st.set_option("client.toolbarMode", "viewer")  # no "Deploy" and developer menu for annotators


def resume_session() -> None:
    """After a reload: the session named by the cookie, if it lives and its token still works."""
    found = sessions.resume(st.context.cookies.get(sessions.COOKIE))
    if found is None:
        return
    sid, session = found
    try:
        me = api_client(session.token).me()
    except ApiError:  # revoked or expired meanwhile, or the API is down: sign in again
        sessions.close(sid)
        return
    st.session_state.update(token=session.token, _sid=sid)
    signed_in_as(me)
    remembered = session.remembered
    if remembered.get("current_dataset"):
        st.session_state["current_dataset"] = remembered["current_dataset"]
    for key, value in (remembered.get("filters") or {}).items():
        if value is not None:
            st.session_state[key] = value


def sign_out() -> None:
    token, dataset = st.session_state.get("token"), st.session_state.get("current_dataset")
    if token and dataset:
        with contextlib.suppress(ApiError):  # give back any variants leased to you, so others can take them now
            api_client(token).release_leases(dataset)
    sessions.close(st.session_state.get("_sid"))
    for key in list(st.session_state.keys()):
        del st.session_state[key]
    st.session_state["_cookie_action"] = {"sign_out": True, "nonce": sessions.new_nonce()}


session_ended()  # signed out in another tab, or expired: this tab's token goes with it (review_ui/state.py)
end_refused_session()  # the API refused the token (revoked, expired): sign in again
if not st.session_state.get("token"):
    resume_session()
refresh_user()  # the role may have changed since sign-in: the pages offered follow it
cookie_action = st.session_state.pop("_cookie_action", None)
if cookie_action:
    with st.sidebar:
        session_cookie(key="session_cookie", data=cookie_action, height=0)

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
        [
            st.Page(PAGES / "tokens.py", title="Tokens", icon=":material/key:"),
            st.Page(PAGES / "projects.py", title="Projects", icon=":material/group:"),
        ]
        if who.get("role") == "admin"
        else []
    )
    page = st.navigation({"Work": common, **({"Admin": admin} if admin else {})})
    with st.sidebar:
        # A person's role is per project (annotator or lead, on the pages that need it); only admin is global.
        role = " (admin)" if who.get("role") == "admin" else ""
        st.caption(plain(f"Signed in as {who.get('name', '?')}{role}"))
        st.button("Sign out", on_click=sign_out, key="sign_out")
st.session_state["_page"] = page.url_path  # whose messages it draws (state.show_flash)
drawn: dict = {}  # what this run draws (a run cut short drew what the next draws again); held here: after
st.session_state["_drawn"] = drawn  # st.stop() no session-state access works
try:
    page.run()
except StopException:  # the page ended itself (st.stop): a run that ends, its messages shown
    end_flash(drawn=drawn)
    raise
end_flash(drawn=drawn)  # not reached when a click stops the run: its messages wait for the next (state.show_flash)
