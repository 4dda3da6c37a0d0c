"""The review UI's side of issue 13: it passes on each browser's address (so one browser's wrong tokens lock out
that browser only), shows token states as the API decides them, and lets admins manage projects."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from tests.review_fixtures import issue_token, live_api, review_data  # noqa: F401

APP = "../review_ui/app.py"


def signed_in(token: str, role: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["token"] = token
    at.session_state["user"] = {"id": 0, "name": "someone", "role": role}
    return at.run()


def no_errors(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def test_wrong_tokens_from_one_browser_do_not_lock_out_the_others(
    app, settings, live_api, annotator_token, monkeypatch
) -> None:
    """The UI server reaches the API from 127.0.0.1 for everyone; the API believes its X-Forwarded-For."""
    from review_ui import state
    from review_ui.client import ApiClient, ApiError

    app.state.settings = settings.model_copy(update={"trusted_proxies": ["127.0.0.1"]})
    app.state.auth_limiter.per_minute = 3
    statuses = []
    for _ in range(4):
        with pytest.raises(ApiError) as err:
            ApiClient("aug_wrong-token-typed", base_url=live_api, browser_address="203.0.113.7").me()
        statuses.append(err.value.status)
    assert statuses == [401, 401, 401, 429]
    colleague = ApiClient(annotator_token, base_url=live_api, browser_address="198.51.100.20")
    assert colleague.me()["name"] == "bob-annotator"
    # the pages build their clients with the browser's address, as Streamlit reports it
    monkeypatch.setattr(state, "browser_address", lambda: "198.51.100.20")
    assert state.api_client(annotator_token).http.headers["x-forwarded-for"] == "198.51.100.20"


def test_the_tokens_page_shows_expired_tokens_as_expired(live_api, engine, admin_token) -> None:
    from db.models import APIToken, utcnow
    from db.session import session_scope

    old = issue_token(engine, "old-timer")
    with session_scope(engine) as s:
        s.query(APIToken).filter(APIToken.prefix == old[:10]).one().expires_at = utcnow() - timedelta(days=1)
    at = signed_in(admin_token, "admin")
    at.switch_page("app_pages/tokens.py").run()
    no_errors(at)
    states = {r["name"]: r["state"] for r in at.dataframe[0].value.to_dict("records")}
    assert states["old-timer"] == "expired" and states["alice-admin"] == "active"


def test_admins_manage_projects_and_members_in_the_ui(live_api, engine, admin_token, annotator_token) -> None:
    annotator = signed_in(annotator_token, "annotator")
    with pytest.raises(ValueError):
        annotator.switch_page("app_pages/projects.py")
    issue_token(engine, "dora", project_role="annotator")
    at = signed_in(admin_token, "admin")
    at.switch_page("app_pages/projects.py").run()
    no_errors(at)
    at.text_input[0].input("team-x")
    at.button[0].click().run()
    no_errors(at)
    assert "team\\-x" in at.success[0].value  # markdown-escaped: user text is shown as text
    at.selectbox(key="member_project").set_value("team-x").run()
    at.text_input(key="member_name").input("dora")
    at.selectbox(key="member_role").set_value("lead")
    at.button(key="add_member_btn").click().run()
    no_errors(at)
    headers = {"Authorization": f"Bearer {admin_token}"}
    with httpx.Client(base_url=live_api + "/api/v1", headers=headers) as c:
        assert c.get("/projects/team-x/members").json() == [
            {"user": "dora", "role": "lead", "global_role": "annotator"}
        ]
    at.selectbox(key="remove_pick").set_value("dora")
    at.button(key="remove_member_btn").click().run()
    no_errors(at)
    with httpx.Client(base_url=live_api + "/api/v1", headers=headers) as c:
        assert c.get("/projects/team-x/members").json() == []


def test_a_lead_manages_the_review_settings_and_an_annotator_does_not_see_them(
    live_api, lead_token, annotator_token, review_data
) -> None:
    annotator = signed_in(annotator_token, "annotator")
    annotator.switch_page("app_pages/datasets.py").run()
    no_errors(annotator)
    assert not [h for h in annotator.header if h.value == "Manage"]
    lead = signed_in(lead_token, "annotator")
    lead.switch_page("app_pages/datasets.py").run()
    no_errors(lead)
    assert [h for h in lead.header if h.value == "Manage"]
    assert "Delete dataset" not in [b.label for b in lead.button]  # importing and deleting stay the admins'
    lead.text_area(key="ds_guidelines").input("Keep the **stance**.")
    lead.button[[b.label for b in lead.button].index("Save review settings")].click().run()
    no_errors(lead)
    with httpx.Client(base_url=live_api + "/api/v1", headers={"Authorization": f"Bearer {lead_token}"}) as c:
        assert "stance" in c.get(f"/datasets/{review_data.dataset}").json()["guidelines"]


def test_user_names_are_shown_as_text_not_markdown(live_api, engine, admin_token) -> None:
    """A user name may hold markdown (an image that loads from anywhere, a link): the sidebar, the remove
    button and the messages that quote it show it literally."""
    from review_ui.render import plain

    hostile = "root![U](http://evil.example/u.png)"
    issue_token(engine, hostile)
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["token"] = admin_token
    at.session_state["user"] = {"id": 0, "name": hostile, "role": "admin"}
    at.run()
    assert plain(f"Signed in as {hostile} (admin)") in [c.value for c in at.sidebar.caption]
    at.switch_page("app_pages/projects.py").run()
    no_errors(at)
    at.selectbox(key="member_project").set_value("default").run()
    at.text_input(key="member_name").input(hostile)
    at.selectbox(key="member_role").set_value("lead")
    at.button(key="add_member_btn").click().run()
    no_errors(at)
    assert [s.value for s in at.success] == [plain(f"{hostile} is now lead of default.")]
    at.selectbox(key="remove_pick").set_value(hostile).run()
    assert at.button(key="remove_member_btn").label == plain(f"Remove {hostile}")
    at.button(key="remove_member_btn").click().run()
    no_errors(at)
    assert [s.value for s in at.success] == [plain(f"Removed {hostile} from default.")]
    shown = [c.value for c in at.sidebar.caption] + [b.label for b in at.button] + [s.value for s in at.success]
    assert not [v for v in shown if "](http" in v]  # no link or image syntax left unescaped


@pytest.mark.parametrize(
    "text",
    [
        "label columns http://localhost:9999/steal, **bold**",
        "cannot reach the API at http://127.0.0.1:8772: refused",
        "write to a@b.example or www.evil.example",
        ":smile: :red[alarm] [x](http://e) ![i](http://e/i.png) <b>x</b> `code` $x^2$",
    ],
)
def test_messages_show_addresses_and_markup_as_written_and_link_nowhere(text: str) -> None:
    """plain() feeds Streamlit's markdown (GitHub-flavoured): besides markdown and HTML, GFM links a bare
    http://…, www.… or a@b.c by itself, and an escaped dot inside such a link showed its backslash."""
    from html import escape

    from markdown_it import MarkdownIt

    from review_ui.render import plain

    shown = plain(text)
    assert MarkdownIt("commonmark").render(shown) == f"<p>{escape(text, quote=False)}</p>\n"  # the same characters
    for literal in ("http://", "www.", ":smile:", ":red["):  # GFM autolinks, shortcodes
        assert literal not in shown
    assert all(shown[i - 1] == "\\" for i, c in enumerate(shown) if c == "@")
