"""The review UI as one ASGI app: Streamlit (review_ui/app.py) plus the session-cookie exchange.

`augloop ui` runs `streamlit run review_ui/server.py`; Streamlit finds the `app` below and serves the pages with
one extra route, `/_augloop/session`: POST {ticket} (JSON) sets the HttpOnly session cookie
(review_ui/sessions.py), DELETE clears it; both only for the UI's own pages (another site's are refused).
"""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse, Response  # noqa: E402
from starlette.routing import Route  # noqa: E402

from review_ui import sessions  # noqa: E402

SESSION_PATH = "/_augloop/session"


# Browsers say where a request comes from: Sec-Fetch-Site (every current browser) and Origin. The page's own
# fetch is same-origin; "none" is a request the user started (typed address, bookmark). Anything else is another
# site's page at work: a login CSRF would sign the victim's browser in as the attacker (a text/plain form needs no
# CORS preflight), so it is refused, and so is a body that is not JSON.
SAME_ORIGIN = ("same-origin", "none")


def cross_site(request: Request) -> bool:
    """True when the browser says another site's page sent this request (Sec-Fetch-Site when present, or an
    Origin header naming another host than the one asked)."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None:
        return fetch_site.strip().lower() not in SAME_ORIGIN
    origin = request.headers.get("origin")
    if origin is None:
        return False  # not a browser's cross-origin request (browsers send Origin with every cross-origin POST)
    host = request.headers.get("host", "")
    return origin == "null" or urlsplit(origin).netloc.lower() != host.strip().lower()


def refused(detail: str, status: int) -> Response:
    return JSONResponse({"detail": detail}, status_code=status)


async def session_cookie(request: Request) -> Response:
    if cross_site(request):
        return refused("cross-site request refused", 403)
    if request.method == "DELETE":
        response: Response = Response(status_code=204)
        response.delete_cookie(sessions.COOKIE, path="/", httponly=True, samesite="strict")
        return response
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        return refused("the body must be JSON (Content-Type: application/json)", 415)
    try:
        body = await request.json()
    except ValueError:
        body = None
    ticket = body.get("ticket") if isinstance(body, dict) else None
    value = sessions.redeem_ticket(ticket) if isinstance(ticket, str) else None
    if value is None:
        return JSONResponse({"detail": "unknown or expired ticket", "field": "ticket"}, status_code=400)
    response = JSONResponse({"ok": True})
    response.set_cookie(
        sessions.COOKIE,
        value,
        max_age=sessions.cookie_max_age(),
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


app = st.App(
    str(Path(__file__).with_name("app.py")),
    routes=[Route(SESSION_PATH, session_cookie, methods=["POST", "DELETE"])],
)
