"""The `augloop` command: one entry point, a subcommand per job."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from augloop.cli_augment import augment_app
from augloop.cli_labels import labels_app
from augloop.cli_predict import predict_file
from augloop.cli_projects import project_app
from augloop.cli_report import report_app
from augloop.cli_runs import runs_app
from augloop.cli_terms import terms_app
from augloop.cli_tokens import token_app, user_app
from augloop.cli_train import train_app
from augloop.console import ErrorMappingGroup, between, console, engine, err_console, fail
from core.balance import imbalance_shown
from core.settings import Settings, get_settings

if TYPE_CHECKING:
    from services.importing import ImportResult

# the settings' own defaults, as --help says them (one place for the number)
DEFAULT = {name: field.default for name, field in Settings.model_fields.items()}

app = typer.Typer(
    help="augloop: augment minority classes, review variants, train on approved data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=ErrorMappingGroup,
)


@app.callback()
def private_files() -> None:
    """Everything augloop writes (the database and its WAL, exports, run folders, caches) is readable by its
    owner only: 0600 files, 0700 folders, whatever the shell's umask."""
    os.umask(0o077)


app.add_typer(token_app, name="token")
app.add_typer(project_app, name="project")
app.add_typer(user_app, name="user")
app.add_typer(train_app)  # train, ensemble
app.add_typer(runs_app, name="runs")
app.add_typer(augment_app, name="augment")
app.add_typer(report_app, name="report")
app.add_typer(terms_app, name="terms")
app.add_typer(labels_app, name="labels")
app.command("predict")(predict_file)


@app.command("migrate")
def migrate() -> None:
    """Bring the database to the latest schema (every command also does this on first use)."""
    engine()
    console.print(f"database at the latest schema: {get_settings().resolved_database_url}")


@app.command("import")
def import_cmd(
    file: Annotated[Path, typer.Argument(help="CSV, JSONL or Parquet file (UTF-8)")],
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Dataset name (created if new)")],
    task: Annotated[list[str], typer.Option("--task", "-t", help="A label column; repeat for several tasks")],
    text_col: Annotated[str, typer.Option(help="Text column")] = "text",
    split_col: Annotated[str, typer.Option(help="Split column (train/val/test); absent: stratified split")] = "split",
    split: Annotated[
        str | None,
        typer.Option(help="Every row's split (train, val or test): for a file that is one split, e.g. dev.csv"),
    ] = None,
    id_col: Annotated[str, typer.Option(help="Id column kept as external id")] = "id",
    language: Annotated[
        str | None,
        typer.Option(help="A new dataset's language tag (default en); an existing dataset's, if given, must match"),
    ] = None,
    labels: Annotated[list[str] | None, typer.Option(help="Ordered label set, TASK=a,b,c (repeatable)")] = None,
    split_seed: Annotated[int, typer.Option(help="Seed of the stratified split")] = 42,
    project: Annotated[
        str | None, typer.Option(help="The project a new dataset goes into (default: 'default'); an existing one stays")
    ] = None,
    display_name: Annotated[
        str | None,
        typer.Option(help="A new dataset's name for people; an existing dataset's, if given, must match"),
    ] = None,
) -> None:
    """Import a file into a dataset: all rows or none, any size (read in chunks, with a progress bar)."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

    from services.importing import ImportSpec, import_path

    if file.is_dir():
        fail(f"{file} is a directory; give a CSV, JSONL or Parquet file")
    if file.exists() and not file.is_file():  # a pipe (`<(…)`), a device (/dev/null): read twice, sized
        fail(f"{file} is not a regular file (a pipe or a device); save it to a file and import that")
    if not file.is_file():
        fail(f"file not found: {file}")
    order: dict[str, list[str]] = {}
    for item in labels or []:
        if "=" not in item:
            fail(f"--labels takes TASK=a,b,c; got {item!r}")
        key, values = item.split("=", 1)
        if key.strip() in order:  # the second silently replaced the first
            fail(f"--labels names task {key.strip()!r} twice; give its label set once")
        names = values.split(",") if values.strip() else []  # a blank name among them is refused, as by the API
        order[key.strip()] = [v.strip() for v in names]
    spec = ImportSpec(
        dataset=dataset,
        tasks=task,
        text_col=text_col,
        split_col=split_col,
        split=split,
        id_col=id_col,
        language=language,
        label_order=order,
        split_seed=split_seed,
        project=project,
        display_name=display_name,
    )

    with Progress(
        TextColumn("{task.description}", markup=False),  # it names the user's file
        BarColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[rows]}", markup=False),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        size = file.stat().st_size
        reading = bar.add_task(f"reading {file.name}", total=size, rows="")

        def progress(phase: str, done: int, total: int, rows: int) -> None:
            if phase == "reading":
                bar.update(reading, completed=done, rows=f"{rows:,} rows")
            else:  # the bar counts bytes: after reading, the phases name themselves and the rows
                bar.update(reading, description=f"{phase} {file.name}", completed=size, rows=f"{rows:,} rows")

        result = import_path(engine(), file, spec, progress=progress)
    show_import(result)


def show_import(result: ImportResult) -> None:
    """What an import did, and the warnings to read before training: near-duplicates across splits, rows not
    imported, empty splits and classes missing from them (the import command, the demo)."""
    console.print(
        f"imported {result.imported} samples into [bold]{escape(result.dataset)}[/]"
        f"{' (new dataset)' if result.created_dataset else ''}; "
        f"splits {escape(str(result.split_counts))} ({escape(_split_source(result.split_info))}); "
        f"{result.duplicates_skipped} duplicate(s) skipped",
        highlight=False,
        markup=True,
    )
    groups = [
        ", ".join(f"line {n} ({s})" for n, s in zip(group["lines"], group["splits"], strict=True))
        for group in result.near_duplicates_across_splits
    ]
    _warn(
        f"{result.near_duplicate_groups_across_splits} group(s) of near-duplicate texts span splits (val/test text "
        "leaks into train); their lines and splits:",
        groups,
    )
    pairs = [
        f"line {p['line']} ({p['split']}) near {p['near_split']} sample {p['near_sample']}; "
        + (f"moved to {p['near_split']}" if p["moved"] else "kept there: the file gave its split")
        for p in result.near_existing_across_splits
    ]
    _warn(
        f"{result.near_existing_across_splits_count} new text(s) near a text the dataset holds on the other side "
        "of the train/eval line:",
        pairs,
    )
    _warn(
        f"{result.duplicates_of_reviewed_samples} row(s) not imported: the dataset holds their text as a sample that "
        "is not an original (its review decides whether it trains, with its own labels and split):",
        [
            f"line {dup['line']}: sample {dup['duplicate_of_sample']}, {dup['origin']} ({dup['review_status']})"
            for dup in result.duplicates
            if dup.get("origin") not in (None, "original")
        ]
        or ([] if not result.duplicates_of_reviewed_samples else ["(beyond the first duplicates listed)"]),
    )
    for warning in result.warnings:  # before training: empty splits, classes missing from them, odd labels
        err_console.print(f"[bold yellow]warning:[/] {escape(warning)}", highlight=False, markup=True)
    for dup in result.duplicates[:20]:
        other = dup.get("duplicate_of_line") or f"sample {dup.get('duplicate_of_sample')}"
        console.print(f"  duplicate: line {dup['line']} repeats {'line ' if 'duplicate_of_line' in dup else ''}{other}")


def _split_source(info: dict[str, Any]) -> str:
    """How an import's split was made, in a few words."""
    if info.get("source") == "given":
        return f"every row: {info.get('split')}"
    if info.get("source") == "column":
        return f"from column {info.get('column')!r}"
    return f"drawn, stratified by {info.get('stratified_by')!r}, seed {info.get('seed')}"


def _warn(header: str, lines: list[str]) -> None:
    """A warning on stderr with its first 20 lines (none: nothing printed)."""
    if not lines:
        return
    err_console.print(f"[bold yellow]warning:[/] {escape(header)}", highlight=False, markup=True)
    for line in lines[:20]:
        err_console.print(f"  {line}", highlight=False)


def print_stats(stats: dict) -> None:
    for task, info in stats["tasks"].items():
        empty = info.get("classes_without_train_text") or []
        imbalance = imbalance_shown(info)
        shown = f" · imbalance {imbalance}" if imbalance else ""
        table = Table(
            title=f"{stats['dataset']} · task {task}{shown}",
            title_justify="left",
        )
        width = max(len(label) for label in info["labels"]) if info["labels"] else 5
        table.add_column("label", min_width=width, no_wrap=True)
        for col in ("train", "val", "test", "pend", "appr", "rej", "train+appr"):
            table.add_column(col, justify="right", no_wrap=True)
        for label, e in info["labels"].items():
            variants = {
                status: sum(n for k, n in e["by_origin"].items() if k.endswith(f":{status}"))
                for status in ("pending", "approved", "rejected")
            }
            table.add_row(
                label,
                str(e["by_split"]["train"]),
                str(e["by_split"]["val"]),
                str(e["by_split"]["test"]),
                str(variants["pending"]),
                str(variants["approved"]),
                str(variants["rejected"]),
                str(e["train_with_approved"]),
            )
        console.print(table)
        # as the Datasets page reads it: printed where it reads differently (2.44 and 2.42 both read 2.4×; ∞ → 3.0×)
        if (with_approved := imbalance_shown(info, with_approved=True)) and with_approved != imbalance:
            console.print(f"  imbalance with approved variants: {with_approved}")
        if info["missing_label"]:
            console.print(f"  original texts with no {task} label: {info['missing_label']}")
        if empty:
            console.print(
                f"  no train text of {', '.join(empty)}: a model cannot learn "
                f"{'this class' if len(empty) == 1 else 'these classes'} (import or submit some)",
                highlight=False,
            )


@app.command()
def stats(
    dataset: Annotated[str, typer.Argument(help="Dataset name")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables")] = False,
) -> None:
    """Class balance per task: counts per label and split, variants by review status, imbalance ratio."""
    from db.session import session_scope
    from services.datasets import class_balance

    with session_scope(engine()) as session:
        result = class_balance(session, dataset, None)
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        print_stats(result)


@app.command()
def delete(
    dataset: Annotated[str, typer.Argument(help="Dataset name")],
    yes: Annotated[bool, typer.Option("--yes", help="Delete without asking")] = False,
) -> None:
    """Delete a dataset with its samples, reviews, jobs and runs, and their files (exports, models, uploads)."""
    from db.session import session_scope
    from services.datasets import class_balance, remove

    with session_scope(engine()) as session:
        samples = class_balance(session, dataset, None)["samples"]  # refuses a missing one
    if not yes:
        if not sys.stdin.isatty():
            fail(f"deleting {dataset!r} ({samples:,} samples) cannot be undone: pass --yes to confirm")
        typer.confirm(f"Delete dataset {dataset!r} with its {samples:,} samples, reviews, runs and files?", abort=True)
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    # one transaction (atomic: Ctrl-C leaves the dataset whole), so no count to show: a spinner and the time
    # (300,000 samples took half a minute in silence)
    columns = (SpinnerColumn(), TextColumn(f"deleting {dataset} ({samples:,} samples)", markup=False))
    with Progress(*columns, TimeElapsedColumn(), console=err_console, transient=True) as bar:
        bar.add_task("delete", total=None)
        with session_scope(engine()) as session:
            remove(session, dataset)
    console.print(f"deleted {escape(dataset)} ({samples:,} samples) and its files", highlight=False)


@app.command()
def export(
    dataset: Annotated[str, typer.Argument(help="Dataset name")],
    output_arg: Annotated[
        str, typer.Option("--output", "-o", metavar="FILE", help="File to write; - for standard output")
    ],
    format: Annotated[str | None, typer.Option(help="csv or jsonl (default: by the file's name, else csv)")] = None,
    include: Annotated[str, typer.Option(help="original,approved (also pending, rejected)")] = "original,approved",
) -> None:
    """Write the training view (originals + approved variants) with provenance columns."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from db.session import session_scope, snapshot_engine
    from services.datasets import export_to, export_to_text, reimport_command
    from services.exporting import check_format, format_for

    # as written: a Path reads "./-" (the way to name a file called "-") as "-"
    if output_arg == "-":  # standard output, for a pipe: the rows there, what was left out on stderr
        if sys.stdout is None:  # started with descriptor 1 closed (`>&-`): an AttributeError's traceback
            fail("standard output is closed; give -o a file")
        format = format or "csv"
        check_format(format)
        with session_scope(snapshot_engine(engine())) as session:  # one snapshot, on Postgres too
            count = export_to_text(session, dataset, format, include, sys.stdout)
            command = reimport_command(session, dataset, "FILE")
        err_console.print(f"wrote {count.rows} rows to standard output", highlight=False)
        _export_notes(count, "x.jsonl")
        _reimport_note(*command)
        return
    if not output_arg:
        fail("--output names no file; give a path, or - for standard output")
    output = Path(output_arg)
    format = format_for(output, format)

    writing = TextColumn(f"writing {output.name}", markup=False)
    columns = (writing, BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    # Read-only: on SQLite a write transaction would hold the database's one write lock for the whole export.
    with (
        Progress(*columns, console=err_console, transient=True) as bar,
        session_scope(snapshot_engine(engine())) as session,  # one snapshot, on Postgres too
    ):
        rows_task = bar.add_task("rows", total=None)
        count = export_to(
            session,
            dataset,
            format,
            include,
            output,
            lambda done, total: bar.update(rows_task, completed=done, total=total),
        )
        command = reimport_command(session, dataset, str(output))
    console.print(f"wrote {count.rows} rows to {output}")
    _export_notes(count, output.with_suffix(".jsonl").name)
    _reimport_note(*command)


def _export_notes(count: Any, jsonl_name: str) -> None:
    """What an export left out or changed, on stderr."""
    if count.left_out_near_val_test:
        err_console.print(
            f"[bold yellow]warning:[/] left out {count.left_out_near_val_test} approved rows whose text is a "
            "near-duplicate of a val/test text (every training run leaves them out too)",
            highlight=False,
            markup=True,
        )
    if count.guarded_cells:
        err_console.print(
            f"note: {count.guarded_cells} cells begin like a spreadsheet formula (=, +, -, @) and got a leading ' "
            f"so that a spreadsheet shows them as text; for the exact texts and labels, export JSONL (-o "
            f"{jsonl_name})",
            highlight=False,
            markup=False,
        )


def _reimport_note(command: str, unspelt: list[str]) -> None:
    """On stderr: the import that recreates the dataset's label sets (their order, the classes' ids) and language,
    which the file does not hold (an import without them takes the labels its rows hold, sorted, and `en`)."""
    err_console.print(
        "the file holds rows, not the dataset's label sets (their order is the classes' ids) or its language; "
        "to import it as a new dataset with them (on this server, give --dataset another name):",
        highlight=False,
        markup=False,
    )
    err_console.print(f"  {command}", highlight=False, markup=False, soft_wrap=True)  # one line, to copy
    if unspelt:
        err_console.print(
            f"  (task(s) {', '.join(repr(t) for t in unspelt)}: a name --labels TASK=a,b,c cannot spell, with = in "
            "the task or , or spaces at the ends of a label; give their label sets with the API's labels field, "
            'JSON such as {"task": ["a", "b"]})',
            highlight=False,
            markup=False,
        )


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help=f"Bind address (default: AUGLOOP_API_HOST, {DEFAULT['api_host']})")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help=f"Port (default: AUGLOOP_API_PORT, {DEFAULT['api_port']})", min=1, max=65535)
    ] = None,
) -> None:
    """Run the API (OpenAPI docs at /docs)."""
    import uvicorn

    from api.main import create_app

    settings = get_settings()
    if host is not None and not host.strip():
        fail("--host is empty: give an address (uvicorn reads an empty one as every interface)")
    host, port = host or settings.api_host, port or settings.api_port
    check_listenable(host, port, "--host/--port, AUGLOOP_API_HOST/AUGLOOP_API_PORT")
    engine()  # migrate before accepting requests
    # proxy_headers off: uvicorn would otherwise believe X-Forwarded-For from 127.0.0.1, letting anyone on the
    # host pick the address their failed sign-ins count against; api/deps.py believes AUGLOOP_TRUSTED_PROXIES.
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level="info",
        proxy_headers=False,
    )


def check_listenable(host: str, port: int, names: str, *, ipv4_unless_colon: bool = False) -> None:
    """Exit 2 naming the settings when `host`:`port` cannot be listened on (a port in use, an address not this
    machine's): uvicorn exited 3 without naming them, and Streamlit (run in this process's place) with a
    traceback. A probe socket is bound as the server binds (an IPv6 socket IPv6-only, as asyncio's; Streamlit
    takes IPv4 for a host without a colon: `ipv4_unless_colon`), then closed; the server binds a moment later."""
    import socket

    family_wanted = socket.AF_INET if ipv4_unless_colon and ":" not in host else socket.AF_UNSPEC
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, family=family_wanted, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (socket.gaierror, UnicodeError) as err:
        fail(f"cannot listen on {host}:{port} ({names}): not an address of this machine ({err})")
    try:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: TIME_WAIT is free
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            probe.bind(address)
    except OSError as err:
        fail(f"cannot listen on {host}:{port} ({names}): {err.strerror or err}")


WORKER_START_WAIT_SECONDS = 60.0  # how long a starting worker waits for a database that does not answer yet


@app.command()
def worker(
    kinds: Annotated[list[str] | None, typer.Option("--kinds", "-k", help="Job kinds to run (default all)")] = None,
    burst: Annotated[bool, typer.Option(help="Drain the queue, then exit")] = False,
    lease_seconds: Annotated[
        float | None, typer.Option(help="Job lease length (seconds)", callback=between(0.1, 86_400))
    ] = None,
    gpu: Annotated[int | None, typer.Option(help="Pin this worker (and its processes) to GPU N")] = None,
    gpus: Annotated[str | None, typer.Option(help="'all': one worker per visible GPU")] = None,
) -> None:
    """Run jobs from the queue; SIGTERM finishes the current job (a training run: checkpoints it and hands it
    back to the queue) and exits."""
    from augloop import gpu_workers

    if gpus is not None:
        if gpus != "all":
            fail(f"--gpus takes 'all'; got {gpus!r} (use --gpu N for one GPU)")
        if gpu is not None:
            fail("--gpu and --gpus are exclusive")
        passed = [arg for item in kinds or [] for arg in ("--kinds", item)]
        passed += ["--burst"] if burst else []
        passed += ["--lease-seconds", str(lease_seconds)] if lease_seconds is not None else []
        raise typer.Exit(gpu_workers.run_one_per_gpu(passed))
    if gpu is not None:
        gpu_workers.pin(gpu)  # before anything initialises CUDA

    import time

    from sqlalchemy.exc import DBAPIError, OperationalError

    from services.failures import database_outage
    from workers.main import Worker

    def waitable(err: DBAPIError) -> bool:  # a database restarting, not a file that is no database or read-only
        return isinstance(err, OperationalError) and database_outage(err)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)  # the schema check's ten "setup plugin" lines say nothing
    chosen = [k.strip() for item in kinds or [] for k in item.split(",") if k.strip()]
    if kinds and not chosen:  # `--kinds ''` (an unset variable in a script) ran a worker of every kind
        fail("--kinds names no job kind; leave it out to run every kind")
    # A database restarting as the worker starts (its schema check is the first query) is waited for, as the
    # worker's loop waits for it later; one that stays away past WORKER_START_WAIT_SECONDS is an error (exit 2).
    deadline = time.monotonic() + WORKER_START_WAIT_SECONDS
    while True:
        try:
            w = Worker(engine(), chosen or None, lease_seconds=lease_seconds)
            break
        except ValueError as err:
            fail(str(err))
        except DBAPIError as err:
            if time.monotonic() > deadline or not waitable(err):
                raise
            logging.getLogger("augloop.worker").warning(
                "the database did not answer at start (%s); retrying", str(err).splitlines()[0]
            )
            time.sleep(1.0)
    w.install_signal_handlers()
    stats = w.run(burst=burst, announce=True)
    console.print(
        f"worker {w.worker_id} stopped: {stats.succeeded} succeeded, {stats.failed} failed, "
        f"{stats.retried} to retry, {stats.cancelled} cancelled, {stats.released} handed back, "
        f"{stats.declined} handed over to other workers",
        highlight=False,
    )


@app.command()
def ui(
    port: Annotated[
        int | None, typer.Option(help=f"Port (default: AUGLOOP_UI_PORT, {DEFAULT['ui_port']})", min=1, max=65535)
    ] = None,
) -> None:
    """Run the review UI (Streamlit); it talks to the API at AUGLOOP_API_URL."""
    import os

    from review_ui import SERVER_PATH, STREAMLIT_FLAGS, upload_limit_mb

    settings = get_settings()
    port = port or settings.ui_port
    check_listenable(settings.ui_host, port, "AUGLOOP_UI_HOST, --port/AUGLOOP_UI_PORT", ipv4_unless_colon=True)
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(SERVER_PATH),
        *STREAMLIT_FLAGS,
        f"--server.port={port}",
        f"--server.address={settings.ui_host}",
        f"--server.maxUploadSize={upload_limit_mb()}",  # the server refuses what the Import tab's API would
    ]
    sys.stdout.flush()
    os.execv(sys.executable, cmd)  # become Streamlit: signals (Ctrl-C, SIGTERM) reach it directly


@app.command()
def demo(
    no_serve: Annotated[bool, typer.Option("--no-serve", help="Import and print, then exit")] = False,
) -> None:
    """The main job on the embedded defaults: import the example dataset, then run API, worker and UI.

    They listen on AUGLOOP_API_PORT (8000) and AUGLOOP_UI_PORT (8501): set these when the ports are taken."""
    from augloop.demo import run_demo

    raise typer.Exit(run_demo(serve=not no_serve))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
