"""The review UI as one ASGI app: Streamlit (review_ui/app.py) plus the session-cookie exchange.

`augloop ui` runs `streamlit run review_ui/server.py`; Streamlit finds the `app` below and serves the pages with
one extra route, `/_augloop/session`: POST {ticket} sets the HttpOnly session cookie (review_ui/sessions.py),
DELETE clears it.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse, Response  # noqa: E402
from starlette.routing import Route  # noqa: E402

from review_ui import sessions  # noqa: E402

SESSION_PATH = "/_augloop/session"


async def session_cookie(request: Request) -> Response:
    if request.method == "DELETE":
        response: Response = Response(status_code=204)
        response.delete_cookie(sessions.COOKIE, path="/", httponly=True, samesite="strict")
        return response
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
