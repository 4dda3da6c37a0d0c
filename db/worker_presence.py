"""The `workers` table: each running worker process announces itself, refreshes `last_seen_at` every
`refresh_seconds` (its own setting), and removes its row when it stops. A row not refreshed for three of its
intervals belongs to a worker that died (SIGKILL, lost host); rows a day stale are deleted. Every time here is the
database's clock (db.queue.db_now, as for leases): the hosts of a deployment may disagree on the time, and a worker
whose clock runs behind the API's host would otherwise be shown dead while it works."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from db.models import WorkerPresence
from db.queue import db_now
from db.session import affected_rows

STALE_AFTER = timedelta(days=1)  # rows of dead workers are deleted after this long


def announce(
    session: Session,
    worker_id: str,
    *,
    hostname: str,
    pid: int,
    kinds: list[str],
    capabilities: dict[str, Any],
    refresh_seconds: float,
) -> None:
    now = db_now(session)
    row = session.get(WorkerPresence, worker_id)
    if row is None:
        row = WorkerPresence(id=worker_id, started_at=now)
        session.add(row)
    row.hostname, row.pid, row.kinds, row.capabilities = hostname, pid, list(kinds), capabilities
    row.refresh_seconds = refresh_seconds
    row.last_seen_at = now
    session.flush()


def touch(session: Session, worker_id: str) -> bool:
    """Refresh the row; False when it is gone (removed by `forget_stale` after a long pause)."""
    row = session.get(WorkerPresence, worker_id)
    if row is None:
        return False
    row.last_seen_at = db_now(session)
    return True


def remove(session: Session, worker_id: str) -> None:
    session.execute(delete(WorkerPresence).where(WorkerPresence.id == worker_id))


def is_live(row: WorkerPresence, now: datetime) -> bool:
    """Seen within three of its own refresh intervals (plus slack for a busy database)."""
    return (now - row.last_seen_at).total_seconds() <= 3 * row.refresh_seconds + 5


def live_workers(session: Session) -> list[WorkerPresence]:
    now = db_now(session)
    recent = session.scalars(
        select(WorkerPresence)
        .where(WorkerPresence.last_seen_at >= now - STALE_AFTER)
        .order_by(WorkerPresence.started_at)
    )
    return [row for row in recent if is_live(row, now)]


def forget_stale(session: Session) -> int:
    """Delete the rows of workers not seen for a day (dead ones); returns how many."""
    cutoff = db_now(session) - STALE_AFTER
    return affected_rows(session.execute(delete(WorkerPresence).where(WorkerPresence.last_seen_at < cutoff))) or 0
