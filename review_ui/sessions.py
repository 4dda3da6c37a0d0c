"""Sign-in sessions that survive a browser reload, without the API token in the URL or on disk.

The token stays in this UI server's memory, in a session record (token, who, the page's filters). The browser
only holds an HttpOnly, SameSite=Strict cookie with the session's random id, signed with a key that lives in
this process (itsdangerous, with a timestamp: the cookie expires after `UI_SESSION_HOURS`). Scripts in the page
cannot read it; a reload sends it with the websocket handshake, and the app looks the session up through
`st.context.cookies`. Restarting the UI server forgets every session (everyone signs in again); signing out
forgets the session at once.

Setting the cookie needs an HTTP response, which a Streamlit script run cannot give: the sign-in page hands the
browser a one-time ticket (valid `TICKET_SECONDS`), and the browser exchanges it at `/_augloop/session`
(review_ui/server.py) for the cookie.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from itsdangerous import BadSignature, TimestampSigner

COOKIE = "augloop_session"
UI_SESSION_HOURS = 12.0
TICKET_SECONDS = 120.0
_signer = TimestampSigner(secrets.token_bytes(32), salt="augloop-ui-session")


@dataclass
class UISession:
    token: str
    user: dict[str, Any]
    expires: float
    remembered: dict[str, Any] = field(default_factory=dict)  # filters and choices to restore after a reload


_lock = threading.Lock()
_sessions: dict[str, UISession] = {}
_tickets: dict[str, tuple[str, float]] = {}  # ticket → (session id, valid until)


def _prune(now: float) -> None:
    for sid in [k for k, v in _sessions.items() if v.expires < now]:
        del _sessions[sid]
    for ticket in [k for k, (_, until) in _tickets.items() if until < now]:
        del _tickets[ticket]


def open_session(token: str, user: dict[str, Any], hours: float = UI_SESSION_HOURS) -> tuple[str, str]:
    """A new session for a signed-in user: (session id, one-time ticket for the cookie exchange)."""
    now = time.time()
    sid, ticket = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    with _lock:
        _prune(now)
        _sessions[sid] = UISession(token, dict(user), now + hours * 3600)
        _tickets[ticket] = (sid, now + TICKET_SECONDS)
    return sid, ticket


def redeem_ticket(ticket: str) -> str | None:
    """The signed cookie value for a ticket, once; None for an unknown, used or expired ticket."""
    now = time.time()
    with _lock:
        _prune(now)
        entry = _tickets.pop(ticket, None)
        if entry is None or entry[0] not in _sessions:
            return None
    return _signer.sign(entry[0]).decode()


def cookie_max_age(hours: float = UI_SESSION_HOURS) -> int:
    return int(hours * 3600)


def resume(cookie: str | None, hours: float = UI_SESSION_HOURS) -> tuple[str, UISession] | None:
    """The session a cookie names, if its signature holds, it is young enough and the session still lives."""
    if not cookie:
        return None
    try:
        sid = _signer.unsign(cookie, max_age=int(hours * 3600)).decode()
    except BadSignature:  # SignatureExpired is a BadSignature too
        return None
    with _lock:
        _prune(time.time())
        found = _sessions.get(sid)
    return (sid, found) if found is not None else None


def alive(sid: str | None) -> bool:
    """Whether the session still lives: a tab that signed in (or resumed) through it works only while it does,
    so signing out in one tab, or the session's expiry, ends the others too."""
    if not sid:
        return False
    with _lock:
        _prune(time.time())
        return sid in _sessions


def remember(sid: str | None, **values: Any) -> None:
    """Keep page state (filters, dataset) with the session, for the next reload."""
    if not sid:
        return
    with _lock:
        found = _sessions.get(sid)
        if found is not None:
            found.remembered.update(values)


def new_nonce() -> str:
    return secrets.token_urlsafe(8)


def close(sid: str | None) -> None:
    if sid:
        with _lock:
            _sessions.pop(sid, None)
