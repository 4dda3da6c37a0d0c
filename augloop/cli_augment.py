"""`augloop augment plan|run`: the minority-class planner and augmentation jobs from the command line."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich import box
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from augloop.console import console, engine, err_console, fail
from core.inputs import MAX_ID
from core.settings import get_settings
from db.session import session_scope
from services import augmentation
from services.augmentation import MAX_N_PER_TEXT, MAX_VARIANTS_PER_JOB, MIN_JOB_SIZE

augment_app = typer.Typer(help="Plan and run augmentation of minority classes.", no_args_is_help=True)

MethodsOpt = Annotated[
    str, typer.Option("--methods", "-m", help="Comma-separated: wordnet, mlm, backtranslation, paraphrase")
]
SeedOpt = Annotated[int, typer.Option(help="Seed: the same job with the same seed gives the same variants")]
ParamsOpt = Annotated[str | None, typer.Option(help="Method parameters, JSON keyed by method")]
FiltersOpt = Annotated[
    str | None,
    typer.Option(help='Variant filters, JSON (e.g. \'{"min_similarity": 0.3, "leakage_threshold": 0.7}\')'),
]
# The planner's options, shared by `augment plan` and `augment run --plan`.
MinFractionOpt = Annotated[float, typer.Option(help="Planner: each class ≥ this fraction of its task's largest")]
MaxMultiplierOpt = Annotated[float, typer.Option(help="Planner: … but ≤ this multiple of its own originals")]
MinCountOpt = Annotated[
    int | None, typer.Option(help="Planner: bring every class up to this many (within --max-multiplier)")
]
PerSourceCapOpt = Annotated[int, typer.Option(help="Planner: at most this many variants per source text")]
TasksOpt = Annotated[list[str] | None, typer.Option("--task", help="Planner: tasks to balance (default all)")]
JobSizeOpt = Annotated[
    int, typer.Option(min=MIN_JOB_SIZE, max=MAX_VARIANTS_PER_JOB, help="Planner: variants per job at most")
]


def _methods(raw: str) -> list[str]:
    return [m.strip() for m in raw.split(",") if m.strip()]


def _params(raw: str | None, option: str = "--params", example: str = '{"mlm": {"top_k": 10}}') -> dict[str, Any]:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as err:
        fail(f"{option} must be JSON like '{example}': {err.msg}")
    except (RecursionError, ValueError):  # JSON, but nested too deep or a number of thousands of digits
        fail(f"{option} must be JSON that Python can read: it is nested too deep or holds a number too long")
    if not isinstance(value, dict):
        fail(f"{option} must be a JSON object" + (" keyed by method" if option == "--params" else ""))
    return value


def _filters(raw: str | None) -> dict[str, Any] | None:
    return _params(raw, "--filters", '{"min_similarity": 0.3}') or None


def _plan_request(options: dict[str, Any], *, count_pending: bool, enqueue: bool):  # type: ignore[no-untyped-def]
    """The plan options `augment plan` and `augment run --plan` share, read from the command's parameters
    (click's ctx.params: one reading of the options for both commands, not two ten-argument calls)."""
    from services.augmentation import PlanRequest

    chosen = [t.strip() for item in options["tasks"] or [] for t in item.split(",") if t.strip()]
    return PlanRequest(
        methods=_methods(options["methods"]),
        min_fraction_of_largest=options["min_fraction"],
        max_multiplier=options["max_multiplier"],
        min_count=options["min_count"],
        per_source_cap=options["per_source_cap"],
        tasks=chosen or None,
        count_pending=count_pending,
        job_size=options["job_size"],
        seed=options["seed"],
        params=_params(options["params"]),
        filters=_filters(options.get("filters")),
        enqueue=enqueue,
    )


def _plan_table(title: str) -> Table:
    return Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)


def print_plan(dataset: str, plan: dict[str, Any]) -> None:
    target = plan["target"]
    floor = f" and ≥ {target['min_count']:,}" if target.get("min_count") else ""
    table = _plan_table(
        f"{dataset} · plan: each class ≥ {target['min_fraction_of_largest']:.0%} of its task's "
        f"largest{floor}, ≤ {target['max_multiplier']:g}× its originals (train split)"
    )
    table.add_column("task", no_wrap=True)
    table.add_column("label", no_wrap=True)
    for col in ("orig", "var", "target", "deficit", "+plan", "expect", "short"):
        table.add_column(col, justify="right", no_wrap=True)
    for c in plan["classes"]:
        style = "bold" if c["deficit"] else None
        table.add_row(
            c["task"],
            c["label"],
            str(c["original"]),
            str(c["variants"]),
            str(c["target"]),
            str(c["deficit"]),
            f"+{c['planned']}" if c["planned"] else "0",
            str(c["expected"]),
            str(c["shortfall"]) if c["shortfall"] else "",
            style=style,
        )
    console.print(table)
    combos = _plan_table("joint label combinations used (a variant carries all its source's labels)")
    tasks = list(dict.fromkeys(c["task"] for c in plan["classes"]))
    combos.add_column(" / ".join(tasks), no_wrap=True)
    for col in ("sources", "variants", "≤/source"):
        combos.add_column(col, justify="right", no_wrap=True)
    for c in plan["combinations"]:
        combos.add_row(
            " / ".join(c["labels"].get(t, "-") for t in tasks),
            str(c["sources"]),
            str(c["variants"]),
            str(c["per_source"]),
        )
    console.print(combos)
    methods = ", ".join(f"{m} {n}" for m, n in plan["methods"].items())
    console.print(
        f"{plan['total_variants']} variants from {plan['sources_used']} sources ({methods}) in "
        f"{len(plan['jobs'])} job(s)",
        highlight=False,
    )


@augment_app.command("plan")
def plan_cmd(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Argument(help="Dataset name")],
    methods: MethodsOpt = "wordnet",
    min_fraction: MinFractionOpt = 0.4,
    max_multiplier: MaxMultiplierOpt = 10.0,
    min_count: MinCountOpt = None,
    per_source_cap: PerSourceCapOpt = 5,
    tasks: TasksOpt = None,
    count_pending: Annotated[bool, typer.Option(help="Count pending variants as if approved")] = True,
    job_size: JobSizeOpt = 2000,
    seed: SeedOpt = 0,
    params: ParamsOpt = None,
    filters: FiltersOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables")] = False,
) -> None:
    """Show what a plan would generate, per task × class and joint label combination (nothing is stored)."""
    request = _plan_request(ctx.params, count_pending=count_pending, enqueue=False)
    with session_scope(engine()) as session:
        plan = augmentation.preview_plan(session, dataset, request, get_settings())
    if as_json:
        for job in plan["jobs"]:
            job.pop("items")
        print(json.dumps(plan, indent=2))
    else:
        print_plan(dataset, plan)


def _wanted_labels(where: list[str]) -> dict[str, str]:
    wanted: dict[str, str] = {}
    for item in where:
        if "=" not in item:
            fail(f"--where takes TASK=LABEL; got {item!r}")
        task, label = (x.strip() for x in item.split("=", 1))
        if task in wanted and wanted[task] != label:
            # The conditions are all met by each source (AND): the last would silently replace the first.
            fail(f"--where names task {task!r} twice ({wanted[task]!r}, {label!r}); a source matches every --where")
        wanted[task] = label
    if not wanted:
        fail("--no-plan needs sources: --sample-id ID (repeatable) or --where TASK=LABEL (repeatable)")
    return wanted


@augment_app.command("run")
def run_cmd(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Argument(help="Dataset name")],
    methods: MethodsOpt = "wordnet",
    use_plan: Annotated[
        bool,
        typer.Option(
            "--plan/--no-plan",
            help="Plan the minority classes (default) or augment the chosen sources n-per-text times",
        ),
    ] = True,
    n_per_text: Annotated[
        int, typer.Option(min=1, max=MAX_N_PER_TEXT, help="--no-plan: variants per source and method")
    ] = 3,
    sample_ids: Annotated[
        list[int] | None, typer.Option("--sample-id", help="--no-plan: a source", min=1, max=MAX_ID)
    ] = None,
    where: Annotated[list[str] | None, typer.Option(help="--no-plan: train originals with TASK=LABEL")] = None,
    min_fraction: MinFractionOpt = 0.4,
    max_multiplier: MaxMultiplierOpt = 10.0,
    min_count: MinCountOpt = None,
    per_source_cap: PerSourceCapOpt = 5,
    tasks: TasksOpt = None,
    job_size: JobSizeOpt = 2000,
    seed: SeedOpt = 0,
    params: ParamsOpt = None,
    filters: FiltersOpt = None,
    count_pending: Annotated[
        bool, typer.Option(help="Plan: count pending variants as if approved (as `augment plan` does)")
    ] = True,
    wait: Annotated[bool, typer.Option(help="Show progress until the jobs finish (a worker must run)")] = False,
) -> None:
    """Enqueue augmentation jobs; `augloop worker` runs them and the variants land as pending."""
    settings = get_settings()

    def run() -> tuple[list[int], dict[str, Any] | None]:
        with session_scope(engine()) as session:
            if use_plan:
                # the plan `augment plan --no-count-pending` previewed is the one enqueued (it had no way here)
                request = _plan_request(ctx.params, count_pending=count_pending, enqueue=True)
                view = augmentation.make_plan_for(session, dataset, request, settings, None)
                return list(view["job_ids"]), {**view["plan"], "id": view["id"]}
            ids = list(sample_ids or []) or augmentation.train_originals_with(
                session, dataset, _wanted_labels(list(where or []))
            )
            if not ids:
                fail("no train-split original matches the --where filters")
            job = augmentation.request_variants(
                session,
                dataset,
                augmentation.AugmentRequest(
                    methods=_methods(methods),
                    n_per_text=n_per_text,
                    seed=seed,
                    sample_ids=ids,
                    params=_params(params),
                    filters=_filters(filters),
                ),
                settings,
                None,
            )
            return [job.id], None

    job_ids, plan = run()
    if plan is not None:
        print_plan(dataset, plan)
        console.print(f"plan {plan['id']} stored", highlight=False)
    if not job_ids:
        console.print("nothing to do: every class already meets the target")
        return
    from services.augmentation import live_workers

    with session_scope(engine()) as session:  # a hint that fits: a worker running, or none yet
        takers = [w for w in live_workers(session) if "augment" in (w.kinds or [])]
    console.print(
        f"enqueued job(s) {', '.join(map(str, job_ids))}; "
        + (
            f"{len(takers)} running worker(s) take augment jobs"
            if takers
            else "no worker that takes augment jobs is running: start one with `augloop worker`"
        ),
        highlight=False,
    )
    if wait:
        raise typer.Exit(wait_for_jobs(job_ids))


def wait_for_jobs(job_ids: list[int], poll_seconds: float = 1.0) -> int:
    """A progress bar per job until all are finished; exit code 1 when any failed or was cancelled."""
    from db.session import readonly_engine
    from services.jobs import jobs_by_id

    reader = readonly_engine(engine())
    columns = (
        TextColumn("job {task.fields[job]} {task.fields[method]}", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]} · kept {task.fields[kept]} · dropped {task.fields[dropped]}", markup=False),
        TimeElapsedColumn(),
    )
    failed = False
    with Progress(*columns, console=console) as progress:
        bars = {
            jid: progress.add_task("", total=None, job=jid, method="", status="queued", kept=0, dropped=0)
            for jid in job_ids
        }
        while True:
            with session_scope(reader) as session:
                jobs = jobs_by_id(session, job_ids)
            for job in jobs:
                info = job.progress_info or {}
                dropped = sum((info.get("dropped") or {}).values())
                progress.update(
                    bars[job.id],
                    total=job.progress_total or None,
                    completed=job.progress_done,
                    method=",".join(job.params.get("methods", [])),
                    status=job.status,
                    kept=info.get("kept", 0),
                    dropped=dropped,
                )
            gone = sorted(set(job_ids) - {job.id for job in jobs})  # its dataset deleted meanwhile
            if all(job.status in ("succeeded", "failed", "cancelled") for job in jobs):
                # a job that vanished is no success: all() of no jobs was True, and the wait exited 0
                failed = bool(gone) or any(job.status != "succeeded" for job in jobs)
                break
            time.sleep(poll_seconds)
    for job_id in gone:
        err_console.print(f"job {job_id} no longer exists (its dataset was deleted?)", highlight=False)
    for job in jobs:
        if job.status != "succeeded":
            err_console.print(f"job {job.id} {job.status}: {job.last_error or ''}", highlight=False)
        elif advice := (job.result or {}).get("advice"):  # most of what it was asked for was dropped: why
            console.print(f"job {job.id}: {advice}", highlight=False, markup=False)
    return 1 if failed else 0
