"""The review UI's side of issue 13: it passes on each browser's address (so one browser's wrong tokens lock out
that browser only), shows token states as the API decides them, and lets admins manage projects."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import timedelta
from html import escape
from pathlib import Path

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from tests.review_fixtures import issue_token, live_api, make_dataset, review_data  # noqa: F401

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


def test_a_second_click_on_a_fresh_form_is_a_double_clicks_tail_not_a_missing_name(
    live_api, admin_token, monkeypatch
) -> None:
    """CI's browser found it: on a busy machine the page was drawn anew between a double click's two clicks, and
    the second one submitted the fresh, empty form: "Type the user name the token is for." beside the token made
    (the project form's would send an empty name). Within review_ui.state.DOUBLE_CLICK_SECONDS of a success, an
    empty submission says nothing and sends nothing; a typed one is the user's own; after the window an empty
    name is refused as before."""
    from review_ui import state

    api = httpx.Client(base_url=live_api + "/api/v1", headers={"Authorization": f"Bearer {admin_token}"})

    def tokens_named(name: str) -> int:
        return [t["name"] for t in api.get("/tokens").json()].count(name)

    monkeypatch.setattr(state, "DOUBLE_CLICK_SECONDS", 3600.0)
    at = signed_in(admin_token, "admin")
    at.switch_page("app_pages/tokens.py").run()
    at.text_input[0].input("newbie")
    at.button[0].click().run()
    no_errors(at)
    assert len(at.code) == 1 and tokens_named("newbie") == 1
    assert at.text_input[0].value == ""  # the fresh form
    at.button[0].click().run()  # the second click, on the fresh form
    no_errors(at)
    assert len(at.code) == 1 and tokens_named("newbie") == 1  # the made token still shown, nothing more made
    at.text_input[0].input("second")
    at.button[0].click().run()  # a name typed: the user's own request, even within the window
    no_errors(at)
    assert tokens_named("second") == 1

    at.switch_page("app_pages/projects.py").run()
    at.text_input[0].input("team-q")
    at.button[0].click().run()
    no_errors(at)
    at.button[0].click().run()  # the second click, on the fresh form: no "name" error, no request
    no_errors(at)
    assert [p["name"] for p in api.get("/projects").json()].count("team-q") == 1

    monkeypatch.setattr(state, "DOUBLE_CLICK_SECONDS", 0.0)  # the window has passed
    at.button[0].click().run()
    assert at.error, "an empty project name, sent on purpose, is refused"
    at.switch_page("app_pages/tokens.py").run()
    at.text_input[0].input("")
    at.button[0].click().run()
    assert [e.value for e in at.error] == ["Type the user name the token is for."]


def _double_click_windows() -> None:
    """A script (AppTest.from_function): double_clicks_tail's window, read from the session state it keeps."""
    import time

    import streamlit as st

    from review_ui.state import DOUBLE_CLICK_SECONDS, double_clicks_tail

    now, w = time.monotonic(), DOUBLE_CLICK_SECONDS
    cases = {
        "made just now": ({"f": now - 0.1}, {}, 0),
        "made long ago, the fresh form drawn just now": ({"f": now - 10 * w}, {"f": (1, now - 0.1)}, 1),
        "made and drawn long ago": ({"f": now - 10 * w}, {"f": (1, now - 5 * w)}, 1),
        "a draw of an older generation": ({"f": now - 10 * w}, {"f": (0, now - 0.1)}, 1),
        "never made": ({}, {"f": (0, now - 0.1)}, 0),
    }
    seen = {}
    for case, (made, drawn, generation) in cases.items():
        st.session_state["_made_at"], st.session_state["_drawn_at"] = made, drawn
        st.session_state["_generations"] = {"f": generation}
        seen[case] = double_clicks_tail("f")
    st.session_state["seen"] = seen


def test_the_double_click_window_runs_from_the_fresh_forms_first_draw_where_that_came_later() -> None:
    """A reviewer's find: the window ran from the request's end, and the Training page reads the API (runs,
    estimates) before it draws its Start button anew: on a busy machine more than the window, so a second click
    on the new button queued the runs again."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(_double_click_windows, default_timeout=30).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state["seen"] == {
        "made just now": True,
        "made long ago, the fresh form drawn just now": True,
        "made and drawn long ago": False,
        "a draw of an older generation": False,
        "never made": False,
    }


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


def test_adding_a_member_without_a_name_says_so(live_api, admin_token) -> None:
    """The "Add or change member" button with the name left empty did nothing at all: no request, no message."""
    at = signed_in(admin_token, "admin")
    at.switch_page("app_pages/projects.py").run()
    at.selectbox(key="member_project").set_value("default").run()
    at.text_input(key="member_name").input("  ")
    at.button(key="add_member_btn").click().run()
    assert not at.exception
    assert [e.value for e in at.error] == ["Type the user name of the member to add."]
    assert not at.success


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
    at = signed_in(issue_token(engine, hostile, "admin"), "admin")  # the sidebar names the user the API reads
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


# What plain() must keep as text in Streamlit's markdown: GFM's address links (http://, https://, ftp://, www.,
# a@b.c, mailto:, xmpp:), entities, every block a line can start, inline markup, shortcodes and icons.
HOSTILE_TEXTS = [
    "see http://evil.example/p1 HTTPS://evil.example/p2 ftp://evil.example/f www.evil.example WWW.Evil.example",
    "mail x@evil.example, mailto:m@evil.example or xmpp:j@evil.example/r; <http://evil.example/a> <x@evil.example>",
    "cannot reach the API at http://127.0.0.1:8772: refused (user a.b@evil.example, host www.evil.example:80)",
    "AT&amp;T bob&ZeroWidthSpace;x &lt;b&gt;y &#60;i&#62; &#x3C;u&#x3E; &copy;",
    "title\n=====",
    "sub\n---",
    "line one\n\n    indented code?\n- item\n+ item\n1. one\n2) two\n> quote\n# h\n```\nfence\n```\n~~~\n***",
    "| a | b |\n|---|---|\n| c | d |",
    "**b** _i_ ~~s~~ `c` [l](http://evil.example/l) ![i](http://evil.example/i.png) <b>x</b> <img src=/x.png>",
    ":smile: :red[alarm] :material/lock: :streamlit: $x^2$ $$y$$ [^1] [r]: http://evil.example/r",
    "two spaces  \nand a backslash\\\nend",
    "x\tTabbed\r\n  windows\rmac\n\n\n<!-- c -->",
]

RENDER_APP = """
import json, sys
sys.path.insert(0, {root!r})
import streamlit as st
from review_ui.render import plain
for i, text in enumerate(json.loads(open({cases!r}, encoding="utf-8").read())):
    with st.container(key=f"case{{i}}"):
        st.error(plain(text))  # state.call(), flash messages
        st.caption(plain(text))  # the sidebar's "Signed in as", captions
        st.subheader(plain(text))  # "Task: ..." on the Datasets page
        st.markdown(f"**{{plain(text)}}** · tail")  # the Training page's task line
        with st.expander(plain(text)):  # the Training page's expanders
            st.text("x")
        st.button(plain(text), key=f"b{{i}}")
        st.download_button(plain(text), b"x", key=f"d{{i}}")
"""

SHOWN_JS = """(n) => Array.from({length: n}, (_, i) => {
  const box = document.querySelector('.st-key-case' + i);
  return Array.from(box.querySelectorAll(
    '[data-testid="stMarkdownContainer"], [data-testid="stCaptionContainer"]')).map(m => ({
    text: m.innerText,
    // Streamlit's own heading anchor aside, no element but paragraphs, line breaks and the test's bold
    tags: Array.from(m.querySelectorAll('*')).filter(e => !e.closest('[data-testid="stHeaderActionElements"]'))
      .map(e => e.tagName).filter(t => !['P', 'SPAN', 'DIV', 'BR', 'H3'].includes(t)),
    links: Array.from(m.querySelectorAll('a')).filter(a => !a.closest('[data-testid="stHeaderActionElements"]'))
      .map(a => a.outerHTML),
  }));
})"""


def visible(text: str) -> str:
    """Text as a reader sees it: zero-width spaces gone, runs of spaces as one, empty lines and line ends gone."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u200b", "").replace("\u00a0", " ")
    lines = (re.sub(r"[ \t]+", " ", line).strip() for line in text.split("\n"))
    return "\n".join(line for line in lines if line)


@pytest.mark.browser
def test_plain_text_in_streamlits_own_markdown_shows_as_written_and_links_nowhere(tmp_path: Path) -> None:
    """Streamlit's markdown is GitHub-flavoured (remark-gfm): after markdown has removed plain()'s backslash
    escapes, its autolink step links http://…, www.… and a@b.c in the text by itself, so this renders every
    element that shows plain() text, for many hostile texts at once, in Chromium: no link, no markup, the same
    characters."""
    from tests.browser_stack import CHROMIUM, CHROMIUM_ARGS, wait_http
    from tests.pg_server import free_port

    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (make system-deps installs it)")
    from playwright.sync_api import sync_playwright

    root = Path(__file__).resolve().parent.parent
    cases = tmp_path / "cases.json"
    cases.write_text(json.dumps(HOSTILE_TEXTS), encoding="utf-8")
    app = tmp_path / "app.py"
    app.write_text(RENDER_APP.format(root=str(root), cases=str(cases)), encoding="utf-8")
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(app),
            f"--server.port={port}",
            "--server.address=127.0.0.1",
            "--server.headless=true",
            "--server.fileWatcherType=none",
            "--browser.gatherUsageStats=false",
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    requested: list[str] = []
    try:
        wait_http(f"http://127.0.0.1:{port}/_stcore/health", server)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1200})
            page.set_default_timeout(60_000)
            page.on("request", lambda r: requested.append(r.url))
            page.goto(f"http://127.0.0.1:{port}")
            page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]')
            page.locator(f".st-key-case{len(HOSTILE_TEXTS) - 1} [data-testid='stDownloadButton']").wait_for()
            shown = page.evaluate(SHOWN_JS, len(HOSTILE_TEXTS))
            browser.close()
    finally:
        server.terminate()
        server.wait(15)
    assert not [url for url in requested if "evil" in url or "/x.png" in url]
    for text, blocks in zip(HOSTILE_TEXTS, shown, strict=True):
        assert len(blocks) == 7, (text, blocks)  # error, caption, subheader, bold line, expander, two buttons
        assert [b["links"] for b in blocks] == [[]] * 7, text  # no <a> from user text
        assert [b["tags"] for b in blocks] == [[], [], [], ["STRONG"], [], [], []], (text, blocks)
        expected = visible(text)
        assert [visible(b["text"]) for b in blocks] == [expected] * 3 + [expected + " · tail"] + [expected] * 3


def test_plain_escapes_entities_and_starts_no_block_on_any_line() -> None:
    """An entity shows as written (not the character it names: "&ZeroWidthSpace;" would hide), "=====" under a
    line makes no heading, and a multi-line message keeps its lines: a hard break at each line end, its
    indentation as no-break spaces (no code block), an empty line holding a no-break space (one paragraph)."""
    from markdown_it import MarkdownIt

    from review_ui.render import plain

    md = MarkdownIt("commonmark")
    assert plain("AT&amp;T &ZeroWidthSpace;") == r"AT\&amp;T \&ZeroWidthSpace;"
    assert md.render(plain("AT&amp;T &#60;b&#62;")) == "<p>AT&amp;amp;T &amp;#60;b&amp;#62;</p>\n"
    assert md.render(plain("title\n=====")) == "<p>title<br />\n=====</p>\n"
    assert md.render(plain("title\n---")) == "<p>title<br />\n---</p>\n"
    assert plain(
        "error:\n\n    at line 3\r\n\tnext\n"
    ) == "error\\:  \n\u00a0  \n\u00a0\u00a0\u00a0\u00a0at line 3  \n" + ("\u00a0" * 4 + "next")
    shown = md.render(plain("    code?\n\n    more\n1. one\n* two\n> three\n<div>\n| a |\n|---|"))
    assert shown.startswith("<p>") and shown.count("<p>") == 1 and "<pre>" not in shown and "<div>" not in shown


@pytest.mark.parametrize(
    "text",
    [
        "label columns http://localhost:9999/steal, **bold**",
        "cannot reach the API at http://127.0.0.1:8772: refused",
        "write to a@b.example or www.evil.example, ftp://f.example, mailto:m@e.example",
        ":smile: :red[alarm] [x](http://e) ![i](http://e/i.png) <b>x</b> `code` $x^2$ AT&amp;T",
    ],
)
def test_messages_show_addresses_and_markup_as_written_and_link_nowhere(text: str) -> None:
    """plain() feeds Streamlit's markdown (GitHub-flavoured), whose autolink step runs on the text after markdown
    has removed the escapes: a zero-width space breaks each address (the Chromium test above renders them)."""
    from markdown_it import MarkdownIt

    from review_ui.render import plain

    shown = plain(text)
    rendered = MarkdownIt("commonmark").render(shown).replace("\u200b", "")
    assert rendered == f"<p>{escape(text, quote=False)}</p>\n"  # the same characters
    unescaped = re.sub(r"\\(.)", r"\1", shown)  # what GFM's autolink step searches
    assert not re.search(r"(?i)https?://|www(?=\.)|[-.\w+]@[-\w]", unescaped)
    for literal in (":smile:", ":red["):  # shortcodes
        assert literal not in shown


def session_route_client():  # type: ignore[no-untyped-def]
    from starlette.applications import Starlette
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from review_ui.server import SESSION_PATH, session_cookie

    app = Starlette(routes=[Route(SESSION_PATH, session_cookie, methods=["POST", "DELETE"])])
    return TestClient(app, base_url="http://127.0.0.1:8501")


def test_another_sites_page_cannot_sign_a_browser_in(tmp_path: Path) -> None:
    """Login CSRF: an attacker keeps their own one-time ticket and makes the victim's browser post it from their
    page (a text/plain form needs no CORS preflight). The route takes JSON only, and refuses what the browser says
    comes from another site; the ticket stays unused, and the UI's own request still signs in."""
    from review_ui import sessions
    from review_ui.server import SESSION_PATH

    _, ticket = sessions.open_session("aug_attackers-token", {"name": "mallory", "role": "annotator"})
    form_body = json.dumps({"ticket": ticket, "x": "="})  # what the attacker's <form> sends: name "=" value
    with session_route_client() as c:
        attempts = [
            # a text/plain form from another site, as Chromium sends it
            ({"content-type": "text/plain", "sec-fetch-site": "cross-site", "origin": "http://localhost:9"}, 403),
            ({"content-type": "text/plain", "sec-fetch-site": "same-site", "origin": "http://a.127.0.0.1"}, 403),
            # a browser without Sec-Fetch-Site: its Origin names another host
            ({"content-type": "application/json", "origin": "http://evil.example"}, 403),
            ({"content-type": "application/json", "origin": "null"}, 403),
            # same origin, but not JSON
            ({"content-type": "text/plain", "sec-fetch-site": "same-origin"}, 415),
            ({"content-type": "application/x-www-form-urlencoded"}, 415),
        ]
        for headers, status in attempts:
            response = c.post(SESSION_PATH, content=form_body, headers=headers)
            assert response.status_code == status, (headers, response.text)
            assert response.headers["content-type"] == "application/json" and "detail" in response.json()
            assert "set-cookie" not in response.headers and not c.cookies
        cross = c.delete(SESSION_PATH, headers={"sec-fetch-site": "cross-site"})
        assert cross.status_code == 403 and "set-cookie" not in cross.headers
        # The UI's own fetch (components.SESSION_JS): same origin, JSON; the ticket was not used up above.
        own = c.post(
            SESSION_PATH,
            json={"ticket": ticket},
            headers={"sec-fetch-site": "same-origin", "origin": "http://127.0.0.1:8501"},
        )
        assert own.status_code == 200 and sessions.COOKIE in own.headers["set-cookie"]
        # and one from a client that sends neither header (not a browser's cross-site request)
        _, other = sessions.open_session("aug_token-2", {"name": "erin", "role": "annotator"})
        assert c.post(SESSION_PATH, json={"ticket": other}).status_code == 200


def test_the_export_download_button_shows_the_dataset_name_as_text(live_api, engine, admin_token) -> None:
    """A dataset's name is its URL slug, which may hold markdown ("x-_slugem_-y" made an <em>)."""
    from db.session import session_scope
    from review_ui.render import plain

    slug = "x-_slugem_-y"
    with session_scope(engine) as s:
        make_dataset(s, slug)
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["token"] = admin_token
    at.session_state["user"] = {"id": 0, "name": "alice-admin", "role": "admin"}
    at.session_state["current_dataset"] = slug
    at.session_state["export"] = (slug, "csv", b"abc")  # as "Prepare export" leaves it
    at.run()
    at.switch_page("app_pages/datasets.py").run()
    no_errors(at)
    [button] = at.get("download_button")
    assert (
        button.proto.label == plain(f"Download {slug}.csv (3 bytes)") == r"Download x\-\_slugem\_\-y\.csv \(3 bytes\)"
    )


def test_signing_out_in_one_tab_signs_the_others_out(live_api, engine, annotator_token, review_data) -> None:
    """Two tabs of one browser share the session its cookie names. Signing out in one forgot the session, yet the
    other tab kept its token and went on deciding as that user until a reload (SECURITY.md: signing out ends
    it). A tab whose session is gone now shows the sign-in page on its next action."""
    from review_ui import sessions

    sid, _ticket = sessions.open_session(annotator_token, {"id": 2, "name": "bob-annotator", "role": "annotator"})
    tabs = []
    for _ in range(2):
        at = AppTest.from_file(APP, default_timeout=60)
        at.session_state["token"], at.session_state["_sid"] = annotator_token, sid
        at.session_state["user"] = {"id": 2, "name": "bob-annotator", "role": "annotator"}
        tabs.append(at.run())
    first, second = tabs
    assert "token_input" not in [t.key for t in second.text_input]
    next(b for b in first.button if b.key == "sign_out").click().run()
    assert not sessions.alive(sid)
    second.run()  # its next action
    assert "token" not in second.session_state
    assert "token_input" in [t.key for t in second.text_input]  # the sign-in page


def _outbox_of_a_signed_out_tab() -> None:
    """A script (AppTest.from_function): a tab whose session another tab ended, then its review cards' callback."""
    import streamlit as st

    from review_ui import review_flow, sessions, state
    from review_ui.review_flow import ReviewView

    sent: list[str] = []

    class Recording:
        def __init__(self, token: str) -> None:
            sent.append(token)

        def decide(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            sent.append("decide")
            raise AssertionError("a decision was sent")

    sid, _ = sessions.open_session("aug_someone", {"id": 1, "name": "someone", "role": "annotator"})
    st.session_state.update(token="aug_someone", _sid=sid)
    sessions.close(sid)  # signed out in the other tab
    real = state.api_client
    state.api_client = Recording  # type: ignore[assignment]  # (this process's: put back below)
    try:
        view = ReviewView("sig", "rev", 1, [7], {7: {"id": 7, "version": 1}}, {}, [], 1, False)
        st.session_state[review_flow.VIEW_KEY] = view
        outbox = [{"op": "approve", "id": 7, "version": 1, "seq": 1}]
        st.session_state[review_flow.COMPONENT_KEY] = {"outbox": outbox}
        review_flow.handle_outbox()
    finally:
        state.api_client = real  # type: ignore[assignment]
    st.write(f"sent={len(sent)} token={'token' in st.session_state}")


def test_a_tab_signed_out_elsewhere_sends_no_decision_from_its_cards() -> None:
    """The check ran only on a full rerun: a decision on the review cards reruns their fragment alone, and its
    callback sent the decision as the signed-out user (as did the panels that refresh themselves)."""
    at = AppTest.from_function(_outbox_of_a_signed_out_tab, default_timeout=30).run()
    assert not at.exception, [e.value for e in at.exception]
    assert [m.value for m in at.markdown] == ["sent=0 token=False"]


def test_a_later_action_within_the_grace_shows_only_its_own_message(live_api, engine, admin_token) -> None:
    """A message is drawn again by its page's runs for PAGE_MESSAGE_SECONDS (a double click's late second run drew
    the page without it); but another action within those seconds drew the earlier action's message beside its
    own: a refusal beside the corrected attempt's success, "bob is now lead of default." beside "Removed bob from
    default." (an attacker's find)."""
    from review_ui.render import plain

    issue_token(engine, "bob")
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["token"] = admin_token
    at.session_state["user"] = {"id": 0, "name": "root", "role": "admin"}
    at.run()
    at.switch_page("app_pages/projects.py").run()

    def create(slug: str) -> None:
        at.text_input(key=next(t.key for t in at.text_input if t.key.endswith("_slug"))).input(slug)
        next(b for b in at.button if b.label == "Create project").click().run()

    create("Bad Name!")
    assert len(at.error) == 1 and not at.success
    create("good")
    assert not at.error and [s.value for s in at.success] == [plain("Created project good.")]
    at.run()  # a run of the page (a late second click) within the grace: still said
    assert [s.value for s in at.success] == [plain("Created project good.")]
    at.selectbox(key="member_project").set_value("default").run()
    at.text_input(key="member_name").input("bob")
    at.selectbox(key="member_role").set_value("lead")
    at.button(key="add_member_btn").click().run()
    assert [s.value for s in at.success] == [plain("bob is now lead of default.")]
    at.selectbox(key="remove_pick").set_value("bob").run()
    at.button(key="remove_member_btn").click().run()
    assert [s.value for s in at.success] == [plain("Removed bob from default.")]
