"""Datasets: list, inspect, import (multipart, now or as a job), class balance, export (streamed or as a job)."""

from __future__ import annotations

import inspect
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import StreamingResponse

from api.deps import AdminUser, CurrentUser, EngineDep, HeadRequest, SessionDep, SettingsDep
from api.downloads import SpooledFileResponse, headers_only
from api.json_body import StrictJSONRoute
from api.schemas import (
    DatasetRead,
    DatasetUpdate,
    DatasetUpdated,
    ExportJobCreate,
    ImportResultRead,
    JobRead,
    LabelRename,
    LabelRenamed,
)
from core.errors import TooLargeError, ValidationFailed
from db.models import Job
from services import datasets as dataset_service
from services import label_sets
from services.import_reading import label_order_from_json
from services.importing import ImportSpec

router = APIRouter(prefix="/datasets", tags=["datasets"], route_class=StrictJSONRoute)


@router.get("", response_model=list[DatasetRead])
def datasets(session: SessionDep, user: CurrentUser) -> list:
    """The datasets of your projects (admins: all) with their tasks and label sets."""
    return dataset_service.all_datasets(session, user)


@router.get("/{name}", response_model=DatasetRead)
def dataset(name: str, session: SessionDep, user: CurrentUser):  # type: ignore[no-untyped-def]
    """One dataset."""
    return dataset_service.dataset_named(session, name, user)


@router.patch("/{name}", response_model=DatasetUpdated)
def update_dataset(name: str, body: DatasetUpdate, session: SessionDep, user: CurrentUser):  # type: ignore[no-untyped-def]
    """Change a dataset's review settings (reviews required per variant, guidelines, language) or its display
    name; the project's
    leads. A new reviews_required re-evaluates every reviewed variant at once and says how many changed status."""
    dataset, moved = dataset_service.update_settings(session, name, body.model_dump(exclude_none=True), user)
    return {**DatasetRead.model_validate(dataset).model_dump(), "status_changes": moved}


@router.post("/{name}/label-renames", response_model=LabelRenamed)
def rename_label(name: str, body: LabelRename, session: SessionDep, admin: AdminUser) -> dict[str, Any]:
    """Rename a class of a task, or merge it into another class of the task (admins): every sample's label moves
    with it. Runs trained before keep the label set they learnt; the pending variants' label-model scores are
    withdrawn (409 while the dataset's imports, augmentation, pseudo-labelling, training or scoring jobs run)."""
    return label_sets.rename_label(session, name, body.task, body.label, body.to, admin)


@router.delete("/{name}", status_code=204)
def remove_dataset(name: str, session: SessionDep, _admin: AdminUser) -> None:
    """Delete a dataset with its samples, reviews and jobs (admins)."""
    dataset_service.remove(session, name)


ImportFile = Annotated[UploadFile, File(description="CSV, JSONL or Parquet, UTF-8")]
ImportTasks = Annotated[list[str], Form(description="A label column; repeat for several tasks")]
ImportLabels = Annotated[str | None, Form(description='Ordered label sets, JSON: {"bias": ["neutral", "partisan"]}')]


async def import_spec(
    request: Request,
    name: str,
    task: ImportTasks,
    text_col: Annotated[str, Form()] = "text",
    split_col: Annotated[str, Form()] = "split",
    split: Annotated[
        str | None, Form(description="Every row's split (train, val or test): a file that is one split")
    ] = None,
    id_col: Annotated[str, Form()] = "id",
    language: Annotated[
        str | None,
        Form(description="A new dataset's language tag (default en); an existing dataset's, if given, must match"),
    ] = None,
    labels: ImportLabels = None,
    split_seed: Annotated[int, Form()] = 42,
    project: Annotated[
        str | None, Form(description="The project a new dataset goes into (default: 'default'); an existing one stays")
    ] = None,
    display_name: Annotated[
        str | None, Form(description="A new dataset's name for people; an existing dataset's, if given, must match")
    ] = None,
) -> ImportSpec:
    """The form fields of an import, now or as a job (one dependency, so both routes take the same fields). An
    unknown field is refused, as a JSON body's unknown key is: a mistyped `split_column` would otherwise be
    ignored and the split drawn. So is a field sent twice, but `task`: the last one would win unsaid (a second
    file, a second project)."""
    form = await request.form()
    unknown = sorted(set(form.keys()) - IMPORT_FORM_FIELDS)
    if unknown:
        raise ValidationFailed(
            f"unknown form field {unknown[0]!r}; the fields are {', '.join(sorted(IMPORT_FORM_FIELDS))}",
            field=unknown[0],
        )
    repeated = sorted(key for key in form if key != "task" and len(form.getlist(key)) > 1)
    if repeated:
        raise ValidationFailed(
            f"form field {repeated[0]!r} is sent {len(form.getlist(repeated[0]))} times; send it once (only `task` "
            "repeats, once per task)",
            field=repeated[0],
        )
    return ImportSpec(
        dataset=name,
        tasks=task,
        text_col=text_col,
        split_col=split_col,
        split=split,
        id_col=id_col,
        language=language,
        label_order=label_order_from_json(labels),
        split_seed=split_seed,
        project=project,
        display_name=display_name,
    )


# The form's fields: the file, and import_spec's own (read from its signature, so a field added there is known).
IMPORT_FORM_FIELDS = frozenset({"file", *inspect.signature(import_spec).parameters} - {"request", "name"})
ImportSpecDep = Annotated[ImportSpec, Depends(import_spec)]


@router.post("/{name}/import", response_model=ImportResultRead, status_code=201)
def import_dataset(
    session: SessionDep, settings: SettingsDep, admin: AdminUser, file: ImportFile, spec: ImportSpecDep
) -> dict[str, Any]:
    """Import a file into a dataset (created if new), now (admins). All rows or none: a bad row rejects the file (422).
    Up to AUGLOOP_MAX_REQUEST_BYTES; larger files go through POST /datasets/{name}/imports (a job)."""
    if file.size is not None and file.size > settings.max_request_bytes:
        raise TooLargeError(
            f"file exceeds {settings.max_request_bytes} bytes; import it as a job (POST /datasets/{{name}}/imports)",
            field="file",
        )
    return dataset_service.import_upload(session, file.file, spec, file.filename, admin.id).as_dict()


@router.post("/{name}/imports", response_model=JobRead, status_code=202)
def import_job(session: SessionDep, engine: EngineDep, admin: AdminUser, file: ImportFile, spec: ImportSpecDep) -> Job:
    """Import a file of any size (up to AUGLOOP_MAX_UPLOAD_BYTES) as a job (admins): 202 with the job; GET /jobs/{id}
    shows bytes read, rows and phase, then the same result as POST /import, or the bad line as its error."""
    return dataset_service.queue_import(session, engine, file.file, spec, file.filename, admin.id)


@router.get("/{name}/stats")
def stats(name: str, session: SessionDep, user: CurrentUser) -> dict:
    """Counts per task × label × split, by origin and review status, and the imbalance ratio per task (null when
    a class has no train text: `classes_without_train_text` names such classes)."""
    return dataset_service.class_balance(session, name, user)


@router.get("/{name}/export", responses={200: {"content": {"text/csv": {}, "application/x-ndjson": {}}}})
def export(
    name: str,
    session: SessionDep,
    engine: EngineDep,
    user: CurrentUser,
    head: HeadRequest,
    format: Literal["csv", "jsonl"] = "csv",
    include: Annotated[str, Query(description="original, approved, pending, rejected")] = "original,approved",
) -> StreamingResponse:
    """The training view (originals + approved variants by default) with provenance columns, read in one snapshot
    and then streamed."""
    out = dataset_service.export_stream(session, engine, name, format, include, user)
    headers = {"Content-Disposition": f'attachment; filename="{out.filename}"'}
    if head:
        return headers_only(out.media_type, headers)
    return SpooledFileResponse(out.spool(), media_type=out.media_type, headers=headers)


@router.post("/{name}/exports", response_model=JobRead, status_code=202)
def export_job(name: str, body: ExportJobCreate, session: SessionDep, user: CurrentUser):  # type: ignore[no-untyped-def]
    """Export as a background job (large datasets); download with GET /jobs/{id}/artifact."""
    return dataset_service.queue_export(session, name, body.format, body.include, user)
