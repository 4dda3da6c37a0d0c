"""Datasets: look-up, settings, deletion, class balance, import and export."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from core.errors import NotFoundError
from db import queue
from db.datasets import dataset_stats, delete_dataset, get_dataset, list_datasets, parse_include
from db.models import Dataset, Job
from services.exporting import iter_export
from services.importing import ImportResult, ImportSpec, import_file


def dataset_named(session: Session, name: str, *, field: str = "name") -> Dataset:
    """The dataset called `name`; a 404 names `field`, the request field that held the name."""
    try:
        return get_dataset(session, name)
    except NotFoundError as err:
        raise NotFoundError(err.message, field=field) from None


def all_datasets(session: Session) -> list[Dataset]:
    return list_datasets(session)


def update_settings(session: Session, name: str, changes: dict[str, Any]) -> tuple[Dataset, dict[str, int]]:
    """Change review settings (reviews required, guidelines, language); `changes` holds only given keys. A new
    reviews_required re-evaluates every reviewed variant in the same transaction: returns the status changes
    by transition (empty when k did not change)."""
    from services.review import reevaluate

    dataset = dataset_named(session, name)
    k_before = dataset.reviews_required
    for key, value in changes.items():
        setattr(dataset, key, value)
    session.flush()
    moved = reevaluate(session, dataset) if dataset.reviews_required != k_before else {}
    return dataset, moved


def remove(session: Session, name: str) -> None:
    delete_dataset(session, name)


def class_balance(session: Session, name: str) -> dict[str, Any]:
    return dataset_stats(session, dataset_named(session, name))


def import_upload(
    session: Session, data: bytes, spec: ImportSpec, filename: str | None, created_by: int | None = None
) -> ImportResult:
    return import_file(session, data, spec, filename=filename, created_by=created_by)


@dataclass
class Export:
    body: str
    filename: str
    media_type: str


def export_now(session: Session, name: str, fmt: str, include: str) -> Export:
    """The training view (or the chosen origins and statuses) as one CSV or JSONL body."""
    dataset = dataset_named(session, name)
    chosen = parse_include(include)
    body = "".join(iter_export(session, dataset, chosen, fmt))
    media = "text/csv" if fmt == "csv" else "application/x-ndjson"
    return Export(body, f"{dataset.name}.{fmt}".replace('"', ""), media)


def queue_export(session: Session, name: str, fmt: str, include: str, user_id: int) -> Job:
    dataset = dataset_named(session, name)
    parse_include(include)
    return queue.enqueue(
        session, "export", {"dataset": dataset.name, "format": fmt, "include": include},
        dataset_id=dataset.id, created_by=user_id,
    )


def export_to(session: Session, name: str, fmt: str, include: str, path: Path) -> int:
    """Write the chosen view to `path` (atomically); returns the number of rows."""
    from services.exporting import write_export

    chosen = parse_include(include)
    return write_export(session, dataset_named(session, name), chosen, fmt, path)
