"""Transaction-scoped advisory locks (Postgres): a lock on a name that no row holds, for work that reads
something and then adds to it, and that a concurrent transaction must not interleave with. Under READ COMMITTED
each statement reads what was committed when it began, so two such transactions that run at once each miss the
other's rows; under the lock the second waits for the first to end, and its statements then read what the first
committed. SQLite needs none: a write transaction begins with BEGIN IMMEDIATE, one writer at a time.

Each use has its own namespace (the first key); the second key is the id of what is locked."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session

# A dataset's decisions (shared) and a change of its reviews_required (exclusive): db/datasets.py.
REVIEW_RULE = 0x61756772  # "augr"
# A dataset's work-share claims: db/review_assignments.py.
REVIEW_CLAIM = 0x6175676C  # "augl"
# A project's quota checks (training jobs in flight, augment candidates owed): db/projects.py.
PROJECT_QUOTA = 0x61756771  # "augq"


def hold_until_commit(session: Session, namespace: int, key: int, *, shared: bool = False) -> None:
    """Take the lock (namespace, key) until the transaction ends, waiting for an exclusive holder (and, unless
    `shared`, for shared ones). A no-op on SQLite."""
    if session.get_bind().dialect.name == "postgresql":
        lock = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
        session.execute(text(f"SELECT {lock}(:ns, :key)"), {"ns": namespace, "key": key})
