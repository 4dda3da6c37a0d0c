"""Progress per annotator: decisions today, their pace, and how often they agree with the majority.

- *Decisions today*: approve, reject and edit reviews since midnight UTC (undos counted apart).
- *Rate*: decisions per hour of active time today, where a pause longer than `PAUSE` between two decisions
  counts as a break, not as work: "120/h" means the pace while reviewing, not over the whole day. Under
  `MIN_ACTIVE` of work there is no rate yet (null).
- *Agreement with the majority*: on variants with standing votes from at least two annotators, how often this
  annotator's keep (approve or edit) / drop (reject) matches the majority of the *other* voters on that
  variant (ties among the others are left out). With one review per variant there is nothing to compare, and
  the figure is null rather than a flattering 100%.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import UNDO, Dataset, Review, Sample, User, utcnow
from services.votes import APPROVING, latest_votes

PAUSE = timedelta(minutes=5)  # a longer gap between two decisions is a break
FIRST = timedelta(seconds=30)  # the reading time credited to the first decision of a stretch
MIN_ACTIVE = timedelta(minutes=2)  # a rate over less work than this says more about luck than pace


def active_seconds(times: list[datetime]) -> float:
    """Seconds of work behind decisions made at `times` (sorted): gaps up to PAUSE, FIRST per stretch."""
    total = 0.0
    for i, at in enumerate(times):
        gap = at - times[i - 1] if i else None
        total += (gap if gap is not None and gap <= PAUSE else FIRST).total_seconds()
    return total


def rate_per_hour(times: list[datetime]) -> float | None:
    """Decisions per hour of active work, once there are MIN_ACTIVE of it."""
    seconds = active_seconds(times)
    return round(len(times) / (seconds / 3600), 1) if seconds >= MIN_ACTIVE.total_seconds() else None


def majority_agreement(votes: dict[int, dict[int, str]]) -> dict[int, tuple[int, int]]:
    """user id → (agreements, comparisons) against the majority of the other voters on each variant."""
    out: dict[int, list[int]] = {}
    for by_user in votes.values():
        if len(by_user) < 2:
            continue
        keeps = {user: decision in APPROVING for user, decision in by_user.items()}
        total_keep = sum(keeps.values())
        for user, keep in keeps.items():
            others_keep = total_keep - keep
            others_drop = len(keeps) - 1 - others_keep
            if others_keep == others_drop:
                continue
            tally = out.setdefault(user, [0, 0])
            tally[0] += keep == (others_keep > others_drop)
            tally[1] += 1
    return {user: (agree, n) for user, (agree, n) in out.items()}


def annotator_progress(
    session: Session, dataset: Dataset, leases: dict[int, int] | None = None, now: datetime | None = None
) -> dict[str, Any]:
    now = now or utcnow()
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    today = session.execute(
        select(Review.user_id, Review.decision, Review.created_at)
        .join(Sample, Sample.id == Review.sample_id)
        # people: the automatic step (reviewer `auto`) signs its decisions in the trail, but annotates nothing
        .where(Sample.dataset_id == dataset.id, Review.created_at >= midnight, Review.automatic.is_(False))
        .order_by(Review.id)
    ).tuples()
    times: dict[int, list[datetime]] = {}
    undone: dict[int, int] = {}
    for user_id, decision, created_at in today:
        if decision == UNDO:
            undone[user_id] = undone.get(user_id, 0) + 1
        else:
            times.setdefault(user_id, []).append(created_at)
    # Only variants with two or more standing votes can show agreement (review_count counts them).
    shared = list(session.scalars(select(Sample.id).where(Sample.dataset_id == dataset.id, Sample.review_count >= 2)))
    agreement = majority_agreement(latest_votes(session, shared))
    voters = (
        session.execute(
            select(Review.user_id)
            .join(Sample, Sample.id == Review.sample_id)
            .where(Sample.dataset_id == dataset.id, Review.automatic.is_(False))
            .distinct()
        )
        .scalars()
        .all()
    )
    leases = leases or {}
    ids = set(voters) | set(leases) | set(times) | set(undone)
    names = dict(session.execute(select(User.id, User.name).where(User.id.in_(ids))).tuples().all()) if ids else {}
    rows = []
    for user_id in sorted(ids, key=lambda u: names.get(u, "")):
        stamps = sorted(times.get(user_id, []))
        seconds = active_seconds(stamps)
        agree, compared = agreement.get(user_id, (0, 0))
        rows.append(
            {
                "user": names.get(user_id, str(user_id)),
                "decisions_today": len(stamps),
                "undone_today": undone.get(user_id, 0),
                "active_minutes_today": round(seconds / 60, 1),
                "per_hour": rate_per_hour(stamps),
                "last_decision_at": stamps[-1] if stamps else None,
                "agreement_with_majority": round(agree / compared, 3) if compared else None,
                "compared_with_majority": compared,
                "leased": leases.get(user_id, 0),
            }
        )
    return {
        "dataset": dataset.name,
        "day_started_at": midnight,
        "reviews_required": dataset.reviews_required,
        "distribute_work": dataset.distribute_work,
        "annotators": rows,
    }
