"""The `workers` table: each running worker process announces itself, refreshes `last_seen_at`, and removes its
row when it stops. A row not refreshed for three intervals belongs to a worker that died (SIGKILL, lost host)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from db.models import WorkerPresence, utcnow


def announce(
    session: Session, worker_id: str, *, hostname: str, pid: int, kinds: list[str], capabilities: dict[str, Any]
) -> None:
    row = session.get(WorkerPresence, worker_id)
    if row is None:
        row = WorkerPresence(id=worker_id, started_at=utcnow())
        session.add(row)
    row.hostname, row.pid, row.kinds, row.capabilities = hostname, pid, list(kinds), capabilities
    row.last_seen_at = utcnow()
    session.flush()


def touch(session: Session, worker_id: str) -> bool:
    """Refresh the row; False when it is gone (removed by `forget_stale` after a long pause)."""
    row = session.get(WorkerPresence, worker_id)
    if row is None:
        return False
    row.last_seen_at = utcnow()
    return True


def remove(session: Session, worker_id: str) -> None:
    session.execute(delete(WorkerPresence).where(WorkerPresence.id == worker_id))


def live_workers(session: Session, max_age_seconds: float) -> list[WorkerPresence]:
    cutoff = utcnow() - timedelta(seconds=max_age_seconds)
    return list(
        session.scalars(
            select(WorkerPresence).where(WorkerPresence.last_seen_at >= cutoff).order_by(WorkerPresence.started_at)
        )
    )


def forget_stale(session: Session, max_age_seconds: float) -> int:
    """Delete rows of workers not seen for `max_age_seconds` (dead ones); returns how many."""
    cutoff = utcnow() - timedelta(seconds=max_age_seconds)
    return session.execute(delete(WorkerPresence).where(WorkerPresence.last_seen_at < cutoff)).rowcount or 0
