"""Data access for a dataset's protected terms (words augmenters never replace). Functions flush only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from db.models import ProtectedTerm
from db.session import affected_rows


@dataclass
class SeededTerm:
    term: str
    task: str
    label: str
    score: float


def list_terms(session: Session, dataset_id: int) -> list[ProtectedTerm]:
    return list(
        session.scalars(
            select(ProtectedTerm).where(ProtectedTerm.dataset_id == dataset_id).order_by(ProtectedTerm.term)
        )
    )


def term_strings(session: Session, dataset_id: int) -> list[str]:
    return list(session.scalars(select(ProtectedTerm.term).where(ProtectedTerm.dataset_id == dataset_id)))


def add_terms(session: Session, dataset_id: int, terms: Sequence[str], origin: str, created_by: int | None) -> int:
    """Add terms not present yet; returns how many were new."""
    present = set(term_strings(session, dataset_id))
    new = [t for t in dict.fromkeys(terms) if t not in present]
    session.add_all(ProtectedTerm(dataset_id=dataset_id, term=t, origin=origin, created_by=created_by) for t in new)
    session.flush()
    return len(new)


def remove_terms(session: Session, dataset_id: int, terms: Sequence[str]) -> int:
    if not terms:
        return 0
    removed = affected_rows(
        session.execute(
            delete(ProtectedTerm).where(ProtectedTerm.dataset_id == dataset_id, ProtectedTerm.term.in_(list(terms)))
        )
    )
    session.flush()
    return removed or 0


def replace_seeded(session: Session, dataset_id: int, seeded: Sequence[SeededTerm], created_by: int | None) -> int:
    """Drop the earlier seeded terms and store these (a term a person added stays, and is not duplicated)."""
    session.execute(
        delete(ProtectedTerm).where(ProtectedTerm.dataset_id == dataset_id, ProtectedTerm.origin == "seeded")
    )
    present = set(term_strings(session, dataset_id))
    rows = [
        ProtectedTerm(
            dataset_id=dataset_id,
            term=s.term,
            origin="seeded",
            task=s.task,
            label=s.label,
            score=s.score,
            created_by=created_by,
        )
        for s in seeded
        if s.term not in present
    ]
    session.add_all(rows)
    session.flush()
    return len(rows)
