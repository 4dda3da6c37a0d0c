"""refresh_user against an API that answers slowly or not at all: a run waits on /me for a few seconds at most,
and the next run does not ask again at once."""

from __future__ import annotations

import types

from streamlit.testing.v1 import AppTest

from tests.review_fixtures import live_api  # noqa: F401


def test_a_hanging_api_costs_a_run_seconds_once_per_window(monkeypatch) -> None:
    import time

    from review_ui import state
    from review_ui.client import ApiError

    clock = {"now": 1000.0, "asked": 0}

    class Hanging:  # a request that waits out its timeout (the client's is 60 s)
        def me(self, **kwargs):  # type: ignore[no-untyped-def]
            clock["asked"] += 1
            clock["now"] += kwargs.get("timeout") or 60.0
            raise ApiError(0, "cannot reach the API: timed out")

    monkeypatch.setattr(state, "client", lambda: Hanging())
    monkeypatch.setattr(state, "time", types.SimpleNamespace(monotonic=lambda: clock["now"], time=time.time))

    def app() -> None:
        import streamlit as st

        from review_ui.state import refresh_user

        st.session_state["token"] = "aug_x"
        st.session_state.setdefault("user", {"name": "ann", "role": "admin"})
        refresh_user()
        st.write(st.session_state["user"]["role"])

    at = AppTest.from_function(app, default_timeout=30).run()
    assert not at.exception
    assert clock["now"] - 1000.0 <= 10.0, f"one run waited {clock['now'] - 1000.0:.0f} s on /me"
    at.run()  # straight after the slow answer: not asked again
    assert clock["asked"] == 1
    assert at.markdown[0].value == "admin"  # the user as last read


def test_a_token_revoked_ends_the_session_at_the_users_read(live_api, engine, admin_token, monkeypatch) -> None:
    """The read of /me at the top of a run meets the 401 first: the session ends there, on the sign-in page."""
    import httpx

    from review_ui import state
    from tests.review_fixtures import issue_token
    from tests.test_review_ui import signed_in

    token = issue_token(engine, "zed")
    at = signed_in(token, "annotator", "zed")
    with httpx.Client(base_url=live_api + "/api/v1", headers={"Authorization": f"Bearer {admin_token}"}) as c:
        token_id = next(t["id"] for t in c.get("/tokens").json() if t["name"] == "zed")
        assert c.post(f"/tokens/{token_id}/revoke").status_code == 200
    monkeypatch.setattr(state, "USER_FRESH_SECONDS", 0.0)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert "token_input" in [t.key for t in at.text_input], [e.value for e in at.error]
    assert any("Your token was refused" in w.value for w in at.warning), [w.value for w in at.warning]
    assert "token" not in at.session_state
