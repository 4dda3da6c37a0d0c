"""API tokens: issue, list, revoke. Only a token's SHA-256 is stored; the token is shown once."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from core.errors import ConflictError, ValidationFailed
from core.names import check_user_name, looks_like
from db import auth
from db.models import TOKEN_ROLES, APIToken, Role, User, utcnow
from db.session import session_scope
from services import review_assignments
from services.review_status import reevaluate_for_role

MIN_EXPIRY_DAYS = 1 / 1440


def issue(session: Session, name: str, role: str, expires_in_days: float | None = None) -> auth.IssuedToken:
    """A token for a (new or existing) user; an expiry, when given, lies in the future. A user name is printable
    text (no control or format characters: U+202E would reverse it wherever it is shown)."""
    name = check_user_name(name, field="name")
    if looks_like(name, auth.AUTO_REVIEWER):
        raise ValidationFailed(f"the name {auth.AUTO_REVIEWER!r} is reserved for automatic decisions", field="name")
    if role not in TOKEN_ROLES:
        raise ValidationFailed(f"role must be one of {', '.join(TOKEN_ROLES)}; got {role!r}", field="role")
    user = auth.user_named(session, name)
    if user is not None and user.role != role:
        raise ValidationFailed(
            f"user {name!r} exists with role {user.role!r}; change it with `augloop user role {name} {role}` "
            "or PATCH /api/v1/users/{name}",
            field="role",
        )
    # at least a minute: 1e-300 days issued a token that had expired when it was handed out
    if expires_in_days is not None and not MIN_EXPIRY_DAYS <= expires_in_days <= 3650:
        raise ValidationFailed(
            f"expires_in_days must be from {MIN_EXPIRY_DAYS:.6f} (one minute) to 3650; got {expires_in_days}",
            field="expires_in_days",
        )
    expires = utcnow() + timedelta(days=expires_in_days) if expires_in_days else None
    return auth.create_token(session, name, role, expires)


def all_tokens(session: Session) -> list[APIToken]:
    return auth.list_tokens(session)


def revoke(
    session: Session, token_id: int | None = None, *, user_name: str | None = None, by: User | None = None
) -> int:
    """Revoke one token (by id) or every token of a user; not both at once (`revoke 2 --user ann` revoked token
    2 whoever's it was). A user left without an active token gives back the review work they hold, in every
    dataset: they can no longer release it themselves (401), and it would stay hidden from the others until
    the leases expired (up to a day). One who still holds an active token keeps it. An admin over the API
    (`by`) may not revoke the last active admin token (keep_an_admin); the operator at the command line may."""
    if token_id is not None and user_name is not None:
        raise ValidationFailed("give a token id or a user, not both", field="user")
    if token_id is None and user_name is None:
        raise ValidationFailed("give a token id or a user name", field="token_id")
    if by is not None:
        hold_admins(session)
    revoked = auth.revoke_token(session, token_id, user_name=user_name)
    if by is not None and revoked:
        keep_an_admin(session, "revoking it", field="token_id")
    if token_id is not None:
        row = session.get(APIToken, token_id)
        user = row.user if row is not None else None
    else:
        user = session.scalar(select(User).where(User.name == user_name))
    if user is not None and not has_active_token(session, user.id):
        review_assignments.release_everywhere(session, user)
    return revoked


def hold_admins(session: Session) -> None:
    """Lock the admins' rows until the caller commits (Postgres; SQLite has one writer at a time), before a change
    keep_an_admin checks: two admins demoting each other at once each saw the other still active and both
    commits went through. The second now waits for the first and sees it."""
    session.execute(select(User.id).where(User.role == Role.admin.value).order_by(User.id).with_for_update()).all()


def keep_an_admin(session: Session, what: str, *, field: str) -> None:
    """After a change made over the API (flushed, not committed), some admin still holds an active token: with
    none, nobody could issue tokens, manage projects or import over the API or the UI again (the last admin
    demoted themselves in one click); only the operator's command line could. Refused with 409 naming `field`,
    and the caller's transaction, rolled back, changes nothing."""
    admins = select(User.id).where(User.role == Role.admin.value, auth.has_active_token(User.id, utcnow()))
    if session.scalar(select(admins.exists())):
        return
    raise ConflictError(
        f"{what} would leave no admin with an active token, and nobody could manage tokens, projects or imports "
        "over the API any more; issue another admin a token first (the operator's `augloop token create --name "
        "NAME --role admin` works regardless)",
        field=field,
    )


def has_active_token(session: Session, user_id: int) -> bool:
    """Whether any of the user's tokens is active (not revoked, not expired), as the database has it now."""
    return bool(session.scalar(select(auth.has_active_token(user_id, utcnow()))))


def authenticate(session: Session, token: str) -> User | None:
    """The user behind a valid (not revoked, not expired) token, or None. Records when the token was last used,
    at most once a minute per token and in a write of its own: a read request stays a read."""
    row = auth.valid_token(session, token)
    if row is None:
        return None
    _note_use(session, row.id)
    return row.user


_USE_EVERY_SECONDS = 60.0
_last_noted: dict[tuple[str, int], float] = {}  # (database, token id) → when its use was last written
_last_noted_lock = threading.Lock()


def _note_use(session: Session, token_id: int) -> None:
    now = time.monotonic()
    engine = session.get_bind().engine.execution_options(readonly=False)  # the engine: a thread writes with it
    key = (str(engine.url), token_id)
    with _last_noted_lock:
        if now - _last_noted.get(key, -_USE_EVERY_SECONDS) < _USE_EVERY_SECONDS:
            return
        _last_noted[key] = now
        if len(_last_noted) > 100_000:  # bounded: forget the oldest half
            for key in sorted(_last_noted, key=_last_noted.__getitem__)[: len(_last_noted) // 2]:
                del _last_noted[key]
    # Written beside the request, never in it: a GET must not take the write lock, and no request should wait
    # behind a long write (a bulk decision) for this.
    when = utcnow()

    def write() -> None:
        try:
            with session_scope(engine) as own:
                auth.mark_used(own, token_id, when)
        except OperationalError:  # busy or gone: the next use (a minute on) records it
            with _last_noted_lock:
                _last_noted.pop(key, None)

    threading.Thread(target=write, name=f"token-{token_id}-used", daemon=True).start()


def token_state(row: APIToken) -> str:
    return auth.token_state(row)


@dataclass(frozen=True)
class RoleChanged:
    user: User
    # dataset name → how many variants moved, by transition: the statuses that read the user's role
    # (services.review_status.reevaluate_for_role); empty when the role did not change
    status_changes: dict[str, dict[str, int]]


def change_role(session: Session, name: str, role: str, by: User | None = None) -> RoleChanged:
    """A user's role, changed (admins); their tokens keep working under the new role. A person is an annotator
    or an admin; `system` is the automatic reviewer's alone, and its role is never changed. The review work
    they hold in datasets the new role no longer lets them review (an admin made an annotator, outside those
    datasets' projects) is given back: they could neither renew nor release it there any more. An admin over
    the API (`by`) may not demote the last admin who holds an active token (keep_an_admin). The statuses that
    read the role are recomputed at once (reevaluate_for_role): a demoted admin's own approval of their
    submission, or their edit, no longer trains without another member's approval."""
    if role not in TOKEN_ROLES:
        raise ValidationFailed(f"role must be one of {', '.join(TOKEN_ROLES)}; got {role!r}", field="role")
    if by is not None:
        hold_admins(session)
    user = auth.get_user(session, name)
    before = user.role
    if before == Role.system.value:
        raise ValidationFailed(f"user {name!r} has role {before!r}, which does not change", field="name")
    auth.set_role(session, user, role)
    if by is not None and role != Role.admin.value:
        keep_an_admin(session, f"making {name!r} an {role}", field="role")
    review_assignments.release_where_barred(session, user)
    moved = reevaluate_for_role(session, user) if before != role else {}
    return RoleChanged(user, moved)
