"""`augloop ensemble` and `augloop runs list|show`: combine runs, and read them with their metrics."""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from augloop.console import console, engine, err_console, fail
from core.inputs import MAX_ID
from db.session import session_scope
from services import training
from services.jobs import settle_lost_jobs
from trainer.soup import describe

log = logging.getLogger(__name__)

runs_app = typer.Typer(help="List and inspect training runs and ensembles.", no_args_is_help=True)


def print_metrics(metrics: dict[str, Any] | None, title: str, *, confusion: bool = False) -> None:
    if not metrics:
        console.print(f"{title}: no labelled samples")
        return
    overall = metrics.get("overall_macro_f1")
    console.print(
        f"[bold]{escape(title)}[/]: overall macro-F1 (mean of tasks) {overall:.4f}"
        if overall is not None
        else f"{escape(title)}: -",
        highlight=False,
        markup=True,
    )
    for task, m in metrics["tasks"].items():
        if m["macro_f1"] is None:
            continue
        table = Table(
            title=f"{task}: macro-F1 {m['macro_f1']:.4f} · accuracy {m['accuracy']:.4f} · n {m['n']}",
            title_justify="left",
        )
        for col in ("class", "precision", "recall", "F1", "support"):
            table.add_column(col, justify="left" if col == "class" else "right")
        for label, c in m["per_class"].items():
            table.add_row(label, f"{c['precision']:.3f}", f"{c['recall']:.3f}", f"{c['f1']:.3f}", str(c["support"]))
        console.print(table)
        missing = m.get("classes_without_support") or []
        if missing:
            note = without_support_note(task, missing, len(m["per_class"]))
            console.print(f"[yellow]{escape(note)}[/]", highlight=False, markup=True)
        if confusion:
            labels = m["confusion"]["labels"]
            cm = Table(title=f"{task}: confusion (rows gold, columns predicted)", title_justify="left")
            cm.add_column("gold \\ pred")
            for label in labels:
                cm.add_column(label[:10], justify="right")
            for label, row in zip(labels, m["confusion"]["matrix"], strict=True):
                cm.add_row(label, *map(str, row))
            console.print(cm)


def without_support_note(task: str, missing: list[str], classes: int) -> str:
    """What a task's macro-F1 leaves out: the classes no text of the split holds (trainer/metrics.py)."""
    names = ", ".join(repr(str(label)) for label in missing[:5]) + (
        f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    )
    return (
        f"{task}: no text of this split is labelled {names} ({len(missing)} of {classes} classes): its macro-F1 "
        "cannot tell how the model recognises them (they count only where it predicts them, with F1 0)"
    )


def decision_line(metrics: dict[str, Any]) -> str | None:
    """A run's decision rule per task, as test metrics and predictions apply it (None: a run without one)."""
    rules = metrics.get("decision")
    if not rules:
        return None
    return "decision: " + ", ".join(rule_text(task, rule) for task, rule in rules.items())


def rule_text(task: str, rule: dict[str, Any]) -> str:
    """One task's decision rule as the CLI prints it: the α kept, or why val's α was not (trainer/decision.py)."""
    gain = None
    if rule.get("cv_macro_f1_after") is not None and rule.get("cv_macro_f1_before") is not None:
        gain = 100 * (rule["cv_macro_f1_after"] - rule["cv_macro_f1_before"])
    se = 100 * rule["cv_gain_se"] if rule.get("cv_gain_se") is not None else None
    held_out = "" if gain is None else f"held out {gain:+.1f}" + (f" ± {se:.1f}" if se is not None else "")
    if rule.get("alpha"):
        return f"{task} α={rule['alpha']:g}" + (f" ({held_out})" if held_out else "")
    fitted = rule.get("alpha_on_val")
    if not fitted or gain is None:
        return f"{task} argmax"
    why = "within its noise" if gain > 0 else "no gain"
    return f"{task} argmax (α={fitted:g} on val, {held_out}: {why})"


def soup_line(soup: dict[str, Any]) -> str:
    """A run's soup as it reports it (a run recorded before the summary was stored: described now)."""
    return str(soup.get("summary") or describe(soup))


def _settle_lost_jobs() -> None:
    """Runs whose process died (an `augloop train` killed with SIGKILL) end here, not only at a worker's next
    claim; a sweep that fails (the database busy) is left to the next one, and the runs are read all the same."""
    try:
        with session_scope(engine()) as session:
            settle_lost_jobs(session)
    except Exception as err:  # noqa: BLE001 - reading the runs matters more than ending lost ones now
        log.warning("sweeping lost jobs failed: %s", err)


def load_run(run_id: int) -> dict[str, Any]:
    _settle_lost_jobs()
    with session_scope(engine()) as session:
        return training.training_run(session, run_id, None)


def ensemble_cmd(
    run_ids: Annotated[list[str], typer.Argument(help="Finished run ids (two or more; TF-IDF members too)")],
    unweighted: Annotated[bool, typer.Option("--unweighted", help="Equal weights, not fitted on val")] = False,
    no_temperature: Annotated[bool, typer.Option("--no-temperature", help="Skip temperature scaling")] = False,
    decision: Annotated[
        str, typer.Option(help="Decision rule fitted on val: prior (for macro-F1) or none (argmax)")
    ] = "prior",
    name: Annotated[str, typer.Option(help="Ensemble name")] = "",
) -> None:
    """Combine finished runs (seeds, architectures, the TF-IDF member): weights, temperatures and decision rule
    fitted on val."""
    from services import ensembles

    try:
        ids = [int(r) for r in run_ids]
    except ValueError:
        fail(f"run ids must be integers; got {run_ids}")
    if out_of_range := [r for r in ids if not 1 <= r <= MAX_ID]:
        fail(f"run ids go from 1 to {MAX_ID}; got {out_of_range[0]}")
    if decision not in ("prior", "none"):
        fail(f"--decision takes prior or none; got {decision!r}")
    with session_scope(engine()) as session:
        run = ensembles.create_ensemble(
            session,
            ids,
            weighted=not unweighted,
            temperature=not no_temperature,
            decision=decision,
            name=name,
            user=None,
        )
        run_id, metrics, config = run.id, run.metrics, run.config
    members = ", ".join(
        f"run {k} ({v['kind']}, weight {config['weights'][k]:.2f}): test {v['test']:.4f}"
        for k, v in metrics["members"].items()
        if v.get("test") is not None
    )
    temps = ", ".join(f"{t} T={v:.2f}" for t, v in config["temperatures"].items())
    rules = ", ".join(rule_text(t, r) for t, r in (config.get("decision") or {}).items())
    console.print(
        f"ensemble {run_id} of runs {ids} ({'weights fitted on val' if not unweighted else 'equal weights'}; "
        f"{temps}; decision {rules or 'argmax'}); members: {members}",
        highlight=False,
    )
    print_metrics(metrics.get("test"), f"ensemble {run_id} test")
    for warning in metrics.get("warnings") or []:  # services.ensembles.ensemble_warnings
        err_console.print(f"[bold yellow]warning:[/] {escape(warning)}", highlight=False, markup=True)


@runs_app.command("list")
def runs_list(
    dataset: Annotated[str | None, typer.Option(help="Only this dataset")] = None,
    kind: Annotated[str | None, typer.Option(help="single, tfidf or ensemble")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first", min=1, max=MAX_ID)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print the runs as JSON (for scripts)")] = False,
) -> None:
    """Runs and ensembles with their status and headline scores."""
    _settle_lost_jobs()
    with session_scope(engine()) as session:
        runs = training.list_training_runs(session, dataset=dataset, kind=kind, limit=limit, user=None)
    if as_json:
        print(json.dumps(runs, indent=2, default=str))
        return
    # a narrow terminal (or a pipe: 80 columns) folds a long cell onto more lines rather than cutting it
    table = Table("id", "dataset", "name", "kind", "status", "epochs", "val F1", "test F1", "created")
    for column in table.columns:
        column.overflow = "fold"
    for r in runs:
        val, test = r["val_macro_f1"], r["test_macro_f1"]
        table.add_row(
            str(r["id"]),
            r["dataset"] or "?",
            r["name"],
            r["kind"],
            r["status"],
            str(r["epochs_done"]),
            f"{val:.4f}" if val is not None else "-",
            f"{test:.4f}" if test is not None else "-",
            f"{r['created_at']:%Y-%m-%d %H:%M}",
        )
    console.print(table)


@runs_app.command("show")
def runs_show(
    run_id: Annotated[int, typer.Argument(help="Run id", min=1, max=MAX_ID)],
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole run as JSON")] = False,
) -> None:
    """A run's config, curve and val/test metrics per task and class (with confusion matrices)."""
    run = load_run(run_id)
    if as_json:
        print(json.dumps(run, indent=2, default=str))
        return
    console.print(
        f"run {run['id']} · {run['name']} · dataset {run['dataset']} · {run['kind']} · {run['status']}"
        + (f" · error: {run['error']}" if run["error"] else ""),
        highlight=False,
    )
    if run["kind"] == "single":
        cfg = run["config"]
        console.print(
            f"encoder {cfg.get('encoder')} · seed {cfg.get('seed')} · max length {cfg.get('max_length')}"
            + (f" · {run['snapshot_size']} training samples" if run["snapshot_size"] else ""),
            highlight=False,
        )
        plan = run["metrics"].get("plan")
        if plan:
            console.print(
                f"plan: {plan['steps_done']} of {plan['planned_steps_final']} steps made, batch "
                f"{plan['batch_size']} × {plan['grad_accum']}, LR {plan['lr']:.3g}, R-Drop {plan['rdrop_alpha']}, "
                f"LLRD {plan['llrd_decay']}"
                + (f", weights averaged (EMA {plan['ema_decay']:.4f})" if plan.get("ema_decay") else "")
                + (f", budget {plan['budget_seconds'] / 60:g} min" if plan.get("budget_seconds") else ""),
                highlight=False,
            )
            for reason in plan.get("reasons") or []:
                console.print(f"  · {reason}", highlight=False)
        selection = run.get("lr_selection_detail") or {}
        if selection:
            why = selection.get("reason")
            console.print(f"LR selection: {selection.get('status')}" + (f": {why}" if why else ""), highlight=False)
            if selection.get("recipe_reason"):
                console.print(f"  {selection['recipe_reason']}", highlight=False)
            for trial in selection.get("trials") or []:
                console.print(
                    f"  trial {trial['scale']:g} × planned LR ({trial['lr']:.3g}), {trial['steps']} steps: "
                    f"val macro-F1 {trial['val_macro_f1']:.4f}",
                    highlight=False,
                )
    elif run["kind"] == "tfidf":
        console.print(
            f"TF-IDF member · C per task {run['metrics'].get('chosen_c')}"
            + (f" · {run['snapshot_size']} training samples" if run["snapshot_size"] else ""),
            highlight=False,
        )
    else:
        console.print(
            f"members {run['member_ids']} · weights {run['config'].get('weights')} · temperatures "
            f"{run['config'].get('temperatures')}",
            highlight=False,
        )
        for warning in run["metrics"].get("warnings") or []:
            console.print(f"[bold yellow]warning:[/] {escape(warning)}", highlight=False, markup=True)
    if run["metrics"].get("left_out"):
        from services.training_data import left_out_line

        console.print(left_out_line(run["metrics"]["left_out"]), highlight=False)
    for entry in run["curve"]:
        console.print(
            f"  epoch {entry['epoch']}: loss {entry['train_loss']:.4f} · val macro-F1 {entry['val_macro_f1']:.4f}",
            highlight=False,
        )
    if run["metrics"].get("soup"):
        console.print(soup_line(run["metrics"]["soup"]), highlight=False)
    if run["status"] in ("queued", "running") and not run["metrics"].get("test"):
        console.print("val and test metrics: once the run has finished", highlight=False)
        return
    if run["status"] in ("failed", "cancelled") and not run["metrics"].get("test"):
        console.print(f"val and test metrics: none, the run {run['status']}", highlight=False)
        return
    if line := decision_line(run["metrics"]):
        console.print(line, highlight=False)
    print_metrics(run["metrics"].get("val"), "val")
    print_metrics(run["metrics"].get("test"), "test", confusion=True)
