"""Per-annotator progress for a dataset (services.annotator_stats) with the leases each holds now."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from db.models import User
from services.annotator_stats import annotator_progress
from services.datasets import dataset_named
from services.review_assignments import leases_by_user


def annotators_of(session: Session, dataset_name: str, user: User | None) -> dict[str, Any]:
    dataset = dataset_named(session, dataset_name, user)
    return annotator_progress(session, dataset, leases_by_user(session, dataset))
