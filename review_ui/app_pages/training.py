"""Training: see the defaults and the estimated time, start runs, follow them live, and read what they give.

The start form shows the full config a run would get and an estimate of its duration before anything is
queued; the runs list and the run being followed refresh themselves while a run is queued or running (epoch,
batch, loss, without a manual refresh); loss, val macro-F1 and learning rate each get their own chart; a
finished run is compared automatically with the dataset's originals-only run when there is one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import streamlit as st

from review_ui import charts
from review_ui.client import ApiError
from review_ui.render import duration, plain
from review_ui.state import (
    call,
    client,
    double_clicks_tail,
    drop_kept,
    fragment_messages,
    generation,
    give_back_typed,
    json_object,
    kept,
    leads,
    new_generation,
    pick_dataset,
    remember_typed,
    seed_list,
    show_flash,
    submit_key,
    submit_once,
)

RUN_MESSAGES = "_flash_runs"  # the runs part's (a fragment: a button in it reruns it alone, its message there)
COLUMNS = [
    "id",
    "name",
    "kind",
    "status",
    "encoder",
    "seed",
    "variants",
    "epochs_done",
    "val_macro_f1",
    "test_macro_f1",
    "created_at",
]
LIVE_SECONDS = 3
# the start form's fields: what the user typed is kept across pages (start_form)
FORM_KEYS = (
    "tr_encoder",
    "tr_seeds",
    "tr_name",
    "tr_epochs",
    "tr_max_length",
    "train_budget",
    "tr_originals_only",
    "tr_classical",
    "tr_extra",
)
MAX_MEMBERS, NAME_MAX = 32, 150  # an ensemble's members and name, as POST /ensembles takes them
ACTIVE = ("queued", "running")


def chosen_tasks(tasks: list[str]) -> dict[str, Any]:
    """The config key the task picker sets: nothing when every task is picked (the default, and then a
    `tasks` in More settings applies), else the picked ones."""
    picked = [t for t in st.session_state.get("tr_tasks") or [] if t in tasks]
    return {} if set(picked) == set(tasks) else {"tasks": picked}


def form_request(dataset: str, tasks: list[str]) -> tuple[dict[str, Any], str | None]:
    """The start request the fields describe, or an error naming the field at fault."""
    ss = st.session_state
    if not ss.get("tr_tasks"):
        return {}, "Pick at least one task to train"
    config: dict[str, Any] = {
        "epochs": int(ss["tr_epochs"]),
        "max_length": int(ss["tr_max_length"]),
        **chosen_tasks(tasks),
    }
    if ss.get("tr_encoder", "").strip():
        config["encoder"] = ss["tr_encoder"].strip()
    if ss.get("tr_originals_only"):
        config["variants"] = "none"
    if float(ss.get("train_budget") or 0) > 0:
        config["budget_minutes"] = float(ss["train_budget"])
    extra, problem = json_object(ss.get("tr_extra") or "{}")
    if extra is None:
        return {}, f'More settings must be a JSON object, e.g. {{"rdrop_alpha": 0}}: {problem}'
    seeds, problem = seed_list(ss.get("tr_seeds") or "")
    if seeds is None:
        return {}, problem
    return {"dataset": dataset, "name": ss.get("tr_name", ""), "config": {**extra, **config}, "seeds": seeds}, None


def queued(created: dict[str, Any]) -> tuple[str, str]:
    ids = ", ".join(f"#{r['id']}" for r in created.get("runs", []))
    return "success", f"Queued training run(s) {ids}; a worker picks them up."


def start(body: dict[str, Any], seen: int) -> None:
    """The Start button's callback; `seen`: the form generation it was drawn in (review_ui.state.submit_once: a
    double click queued the runs twice)."""
    if double_clicks_tail("training"):  # the second click landed on the form drawn anew, its fields kept
        return
    api, classical = client(), bool(st.session_state.get("tr_classical", True))
    submit_once(
        "training",
        lambda: _first_run(api.start_training({**body, "classical": classical})),
        seen=seen,
        said=lambda made: queued(made[1]),
        keep="run_pick",
    )


def _first_run(created: dict[str, Any]) -> tuple[int | None, dict[str, Any]]:
    """(the run to follow, what the API answered): `submit_once` keeps the pair, and the runs list then follows
    the run (set after the request, the pick was lost when a second click stopped the callback there)."""
    runs = created.get("runs") or []
    return (runs[0]["id"] if runs else None), created


def start_form(dataset: str, tasks: list[str]) -> None:
    ss = st.session_state
    if "tr_tasks_kept" not in ss or ss.get("tr_tasks_of") != dataset:  # first visit, or another dataset
        ss["tr_tasks_kept"], ss["tr_tasks_of"] = list(tasks), dataset
    # The pick, kept beside the widget's own key (which Streamlit drops on another page) and given back to it
    ss["tr_tasks"] = [t for t in ss["tr_tasks_kept"] if t in tasks]
    # Streamlit forgets a widget's value when a run does not draw it (another page, a dataset one does not lead):
    # what the user typed is kept under keys of its own and given back (the budget typed, then a look at the Jobs
    # page, came back 0: an estimate of hours); before anything was typed, the fields are read from the
    # defaults, never left at their minimums.
    give_back_typed(FORM_KEYS)
    ss.setdefault("train_budget", 0.0)
    ss.setdefault("tr_classical", True)
    ss.setdefault("tr_extra", "{}")
    if "tr_epochs" not in ss:
        # The fields start at the deployment's defaults, read once. For the tasks picked: a dataset that cannot
        # train one of them (no labelled val text) answers 422 naming it, and until the defaults arrive the
        # fields are not shown, or they would hold their minimums (1 epoch, 8 tokens) and a run could start so.
        defaults = call(client().training_estimate, {"dataset": dataset, "config": chosen_tasks(tasks)})
        if defaults:
            config = defaults["config"]
            ss.update(
                tr_encoder=config["encoder"],
                tr_epochs=config["epochs"],
                tr_max_length=config["max_length"],
                tr_seeds=str(config["seed"]),
            )
    st.multiselect(
        "Tasks to train",
        tasks,
        key="tr_tasks",
        on_change=lambda: ss.__setitem__("tr_tasks_kept", list(ss["tr_tasks"])),
        help="Every task by default; leave out one that cannot train (no labelled val text, one class)",
    )
    if "tr_epochs" not in ss:
        st.info("Pick the tasks to train above: the form opens once the API can plan runs for them.")
        return
    left, right = st.columns(2)
    left.text_input("Encoder (hub name or local directory)", key="tr_encoder")
    left.text_input("Seeds (one run each, comma-separated)", key="tr_seeds")
    left.text_input("Run name", key="tr_name", placeholder="optional")
    right.number_input("Epochs", min_value=1, max_value=200, key="tr_epochs")
    right.number_input("Max length (tokens per text)", min_value=8, max_value=4096, step=16, key="tr_max_length")
    right.number_input(
        "Minutes of training per run (0: the configured epochs, however long)",
        min_value=0.0,
        max_value=7 * 24 * 60.0,
        step=5.0,
        key="train_budget",
        help="Steps, learning rate and regularisers are planned to fit; the learning rate is checked "
        "on val first when the budget allows",
    )
    right.checkbox("Originals only (no variants): the baseline to compare with", key="tr_originals_only")
    left.checkbox("Also train the TF-IDF member (to ensemble with the seeds)", key="tr_classical")
    with st.expander("More settings (JSON overrides of the trainer config)"):
        st.text_area(
            "Overrides",
            height=90,
            key="tr_extra",
            help='Any key of the config below, e.g. {"rdrop_alpha": 0, "oversample": true}',
        )
    remember_typed(FORM_KEYS)
    body, problem = form_request(dataset, tasks)
    if problem:
        st.error(plain(problem))
        return
    try:
        estimate = client().training_estimate(body)
    except ApiError as err:
        st.error(plain(str(err)))
        return
    if estimate.get("encoder_warning"):  # the run would fail seconds after Start: said before it
        st.warning(plain(f"The encoder cannot load here: {estimate['encoder_warning']}"))
    runs = estimate["runs"]
    headline = f"Estimated time: about **{duration(estimate['seconds_per_run'])}** per run"
    if runs > 1:
        headline += f", **{duration(estimate['seconds_total'])}** for the {runs} runs on one worker"
    st.markdown(headline)
    st.caption(
        plain(
            f"{estimate['train_examples']:,} training texts per epoch"
            + (
                " (one of each original and its variants)"
                if estimate["config"].get("variant_sampling") != "all"
                else ""
            )
            + f" × {estimate['epochs']:g} epochs at about "
            f"{estimate['samples_per_second']:.1f} texts/s ({estimate['tokens_per_text']:.0f} tokens per text), "
            f"{estimate['eval_examples']:,} val/test texts, then {estimate['pending_to_score']:,} pending "
            f"variants scored. Basis: {estimate['basis']}; {estimate['note']}."
        )
    )
    if estimate["seconds_per_run"] > 3600:
        st.warning("That is long for this machine: fewer epochs or a shorter max length cut it down.")
    with st.expander("The full config each run gets (defaults filled in)"):
        st.json(estimate["config"])
    st.button(
        "Start training",
        type="primary",
        key=submit_key("training"),
        on_click=start,
        args=(body, generation("training")),
    )


def per_class_frame(task_metrics: dict[str, Any]) -> pd.DataFrame:
    rows = [
        {
            "class": str(label),
            "f1": v.get("f1"),
            "precision": v.get("precision"),
            "recall": v.get("recall"),
            "support": v.get("support"),
        }
        for label, v in (task_metrics.get("per_class") or {}).items()
    ]
    return pd.DataFrame(rows)


def compare_runs(a: dict[str, Any], b: dict[str, Any]) -> pd.DataFrame:
    """Per task and class: F1 of two runs on the same split (test when both have it) and the difference."""
    split = "test" if (a.get("metrics") or {}).get("test") and (b.get("metrics") or {}).get("test") else "val"
    tasks_a = ((a.get("metrics") or {}).get(split) or {}).get("tasks") or {}
    tasks_b = ((b.get("metrics") or {}).get(split) or {}).get("tasks") or {}
    rows = []
    for task in sorted(tasks_a.keys() & tasks_b.keys()):
        ma, mb = tasks_a[task], tasks_b[task]
        rows.append(
            {"task": task, "class": "(macro-F1)", f"#{a['id']}": ma.get("macro_f1"), f"#{b['id']}": mb.get("macro_f1")}
        )
        for label in ma.get("per_class") or {}:
            rows.append(
                {
                    "task": task,
                    "class": str(label),
                    f"#{a['id']}": ma["per_class"][label].get("f1"),
                    f"#{b['id']}": ((mb.get("per_class") or {}).get(label) or {}).get("f1"),
                }
            )
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame[f"#{b['id']} − #{a['id']}"] = frame[f"#{b['id']}"] - frame[f"#{a['id']}"]
        frame.insert(0, "split", split)
    return frame


def queued_said(run: dict[str, Any]) -> str:
    """Why a queued run has not started: its learning-rate selection first, or a free worker (it read "waiting
    for a worker" while the one worker trained the request's TF-IDF member)."""
    selection = (run.get("lr_selection") or {}).get("status")
    if selection == "running":
        return "Waiting for its learning-rate selection, which is training its trials now (see Jobs)."
    if selection == "queued":
        return (
            "Queued: its learning-rate selection runs first, when a worker that takes `train` jobs is free "
            "(`augloop worker`; a worker runs one job at a time, the jobs queued before it first)."
        )
    return (
        "Queued: it starts when a worker that takes `train` jobs is free (`augloop worker`; a worker runs one job "
        "at a time, the jobs queued before it first: see Jobs)."
    )


def live_progress(run: dict[str, Any]) -> None:
    """Where a queued or running run is: epoch, batch within it, loss, val macro-F1 so far."""
    progress = run.get("progress") or {}
    total = progress.get("total") or (run.get("config") or {}).get("epochs") or 0
    if run["status"] == "queued":
        st.info(queued_said(run))
        return
    if run["status"] != "running":
        return
    if progress.get("worker_silent"):
        st.warning(
            "Its worker stopped answering: nothing trains this run now. It resumes from its checkpoint (or fails "
            "on its last attempt) when a worker next looks for work. Is a worker running?"
        )
    if progress.get("checkpoint_error"):  # training goes on; only a lost worker's resume is affected
        st.warning(plain(f"Checkpoint not saved: {progress['checkpoint_error']}."))
    epoch, batches, batch = progress.get("epoch") or 0, progress.get("batches") or 0, progress.get("batch") or 0
    done = progress.get("done") or 0
    fraction = (done + (batch / batches if batches and epoch > done else 0)) / total if total else 0.0
    bits = [f"epoch {max(epoch, done)} of {total}"]
    if batches and epoch > done:
        bits.append(f"batch {batch} of {batches}")
    if progress.get("loss") is not None:
        bits.append(f"loss {progress['loss']:.3f}")
    if progress.get("val_macro_f1") is not None:
        bits.append(f"val macro-F1 {progress['val_macro_f1']:.3f} after epoch {done}")
    if progress.get("phase") and progress["phase"] != "training":
        bits.append(str(progress["phase"]))
    st.progress(min(1.0, fraction), text=" · ".join(bits))


def show_metrics(run: dict[str, Any]) -> None:
    metrics = run.get("metrics") or {}
    split = "test" if metrics.get("test") else "val"
    evaluation = metrics.get(split) or {}
    for task, m in (evaluation.get("tasks") or {}).items():
        st.markdown(
            f"**{plain(task)}** · {split} macro-F1 "
            f"{'n/a' if m.get('macro_f1') is None else format(m['macro_f1'], '.3f')}"
        )
        missing = [str(label) for label in m.get("classes_without_support") or []]
        if missing:
            st.warning(
                plain(
                    f"No {split} text is labelled {', '.join(repr(x) for x in missing)} ({len(missing)} of "
                    f"{len((m.get('confusion') or {}).get('labels') or [])} classes of {task}): this macro-F1 "
                    "cannot tell how the model recognises them (they count only where it predicts them, with F1 0)."
                )
            )
        left, right = st.columns(2)
        per_class = per_class_frame(m)
        if not per_class.empty:
            left.bar_chart(per_class.set_index("class")["f1"], horizontal=True)
            left.dataframe(per_class, hide_index=True, width="stretch")
        confusion = m.get("confusion") or {}
        if confusion.get("matrix"):
            labels = [str(x) for x in confusion["labels"]]
            right.caption("Confusion matrix (rows: gold, columns: predicted)")
            right.dataframe(pd.DataFrame(confusion["matrix"], index=labels, columns=labels), width="stretch")
    selection = run.get("lr_selection_detail") or {}
    if selection:
        with st.expander(plain(f"Learning-rate selection: {selection.get('status')} {selection.get('reason') or ''}")):
            if selection.get("recipe_reason"):
                st.text(selection["recipe_reason"])
            trials = pd.DataFrame(selection.get("trials") or [])
            if not trials.empty:
                st.dataframe(trials, hide_index=True)
    plan = metrics.get("plan") or {}
    if plan:
        with st.expander(
            plain(
                f"Plan: {plan.get('steps_done')} steps of batch {plan.get('batch_size')} × "
                f"{plan.get('grad_accum')}, LR {plan.get('lr', 0):.3g}"
            )
        ):
            for reason in plan.get("reasons") or []:
                st.text(reason)
            if (metrics.get("soup") or {}).get("summary"):  # what the greedy soup of the best epochs did
                st.text(metrics["soup"]["summary"])


def use_as_label_model(dataset: str, run_id: int, seen: int) -> None:
    """Once per click (review_ui.state.submit_once): each request queues a job that rescores the whole queue."""
    api = client()
    submit_once(
        f"label_model_{run_id}",
        api.choose_label_model,
        dataset,
        run_id,
        seen=seen,
        outbox=RUN_MESSAGES,
        said=lambda job: (
            "success",
            f"Job #{job['id']} rescores every pending variant with run #{run_id}; the review cards "
            "show its predictions once it is done.",
        ),
    )


def show_run(run: dict[str, Any], dataset: str, runs: list[dict[str, Any]], may_lead: bool) -> None:
    cols = st.columns(4)
    cols[0].metric("Status", run["status"])
    cols[1].metric("Epochs done", run.get("epochs_done", 0))
    for col, key, label in ((cols[2], "val_macro_f1", "val macro-F1"), (cols[3], "test_macro_f1", "test macro-F1")):
        value = run.get(key)
        curve = run.get("curve") or []
        if value is None and key == "val_macro_f1" and run["status"] in ACTIVE and curve:
            # the final figure comes at the end; while it trains, the last epoch's (the bar beside said it,
            # the box said n/a)
            value, label = curve[-1].get("val_macro_f1"), f"val macro-F1 (epoch {curve[-1].get('epoch')})"
        col.metric(label, "n/a" if value is None else f"{value:.3f}")
    live_progress(run)
    if run.get("kind") == "ensemble":
        members = ", ".join(
            f"#{k} ({v.get('kind')}, weight {(run.get('config') or {}).get('weights', {}).get(k, 0):.2f})"
            for k, v in ((run.get("metrics") or {}).get("members") or {}).items()
        )
        st.caption(plain(f"Members: {members}"))
        for warning in (run.get("metrics") or {}).get("warnings") or []:
            st.warning(plain(warning))
    charts.curve_charts(run.get("curve") or [])
    show_metrics(run)
    if run["status"] == "succeeded" and may_lead:
        st.button(
            f"Use {'ensemble' if run.get('kind') == 'ensemble' else 'run'} #{run['id']} to score the pending variants",
            key=submit_key(f"label_model_{run['id']}"),
            on_click=use_as_label_model,
            args=(dataset, run["id"], generation(f"label_model_{run['id']}")),
            help="A finished run rescores the queue only when its val macro-F1 beats the scorer's; this replaces "
            "the scores whatever they were.",
        )
        baseline = next(
            (r for r in runs if r.get("variants") == "none" and r["status"] == "succeeded" and r["id"] != run["id"]),
            None,
        )
        if baseline is not None and run.get("variants") != "none":
            other = call(client().training_run, baseline["id"])
            if other:
                st.subheader(f"Against the originals-only run #{baseline['id']}")
                st.dataframe(compare_runs(other, run), hide_index=True, width="stretch")
    if run.get("config"):
        with st.expander("Config"):
            st.json(run["config"])
    if run.get("metrics"):
        with st.expander("All metrics (JSON)"):
            st.json(run["metrics"])
    if run.get("error"):
        st.code(run["error"], language=None)


def scorers_caption(dataset: str) -> None:
    """Which models scored the review queue: the cards' label-model flags are only as good as these."""
    summary = call(client().label_model, dataset)
    scorers = [s for s in (summary or {}).get("scorers", []) if s.get("run_id")]
    if not scorers:
        return
    parts = [
        f"{'ensemble' if s.get('kind') == 'ensemble' else 'run'} #{s['run_id']}"
        + (f" (val macro-F1 {s['val_macro_f1']:.2f})" if s.get("val_macro_f1") is not None else "")
        + f": {s['pending']:,} pending variants, {s['flagged']:,} flagged"
        for s in scorers
    ]
    st.caption(
        plain(
            "The review queue's label model: " + "; ".join(parts) + ". A finished run replaces these "
            "scores only where its val macro-F1 is better; the button under a run replaces them all."
        )
    )


def combinable(runs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[int]]:
    """The finished runs an ensemble may combine (transformer runs, TF-IDF members), and those proposed: the ones
    started after the dataset's latest ensemble (a training request's seeds and member), when two or more, at
    most the newest MAX_MEMBERS (the form's limit, as the API's). An impact report's arm runs (trained without
    some variants on purpose) are offered, not proposed."""
    members = [r for r in runs if r.get("status") == "succeeded" and r.get("kind") in ("single", "tfidf")]
    latest = max((r["id"] for r in runs if r.get("kind") == "ensemble"), default=0)
    mine = [r["id"] for r in members if r["id"] > latest and not r.get("impact_arm")]
    proposed = sorted(mine)[-MAX_MEMBERS:]
    return members, proposed if len(proposed) >= 2 else []


def _form_key(name: str) -> str:
    """A widget key of the ensemble form's current generation and proposal: either changed, the form is a fresh
    one (the browser keeps a multiselect's picks under its key, whatever the session state says: a run deleted
    meanwhile stayed picked, a second Combine made the same ensemble again, runs finished later went unproposed)."""
    return f"ens_{name}_{generation('ensemble')}_{st.session_state.get('ens_proposal', '')}"


def _new_form(notice: tuple[str, str] | None = None) -> None:
    new_generation("ensemble")
    if notice:
        st.session_state.setdefault("ens_notice", []).append(notice)


def combined(picked: list[int]) -> Callable[[dict[str, Any]], tuple[str, str]]:
    def said(ensemble: dict[str, Any]) -> tuple[str, str]:
        metrics = ensemble.get("metrics") or {}
        test = (metrics.get("test") or {}).get("overall_macro_f1")
        made = f"Ensemble #{ensemble['id']} of runs {', '.join(f'#{i}' for i in picked)}" + (
            f": test macro-F1 {test:.3f}." if test is not None else "."
        )
        warnings = [w[:1].upper() + w[1:] for w in metrics.get("warnings") or []]
        return ("warning" if warnings else "success", plain(" ".join([made, *(f"{w}." for w in warnings)])))

    return said


def create_ensemble(dataset: str, seen: int) -> None:
    """The form's callback (before the page runs: the runs list then follows the new ensemble). Its messages show
    beside the form (a flash showed at the top of the page, out of sight of the button). Made once per form
    generation (`seen`; review_ui.state.submit_once): a double click's second click read the new form's empty
    pick and replaced the made ensemble's message by "pick at least two runs"."""
    if seen != generation("ensemble"):
        return
    notices = st.session_state.setdefault("ens_notice", [])
    picked = list(st.session_state.get(_form_key("runs")) or [])
    name = (st.session_state.get(_form_key("name")) or "").strip()
    if len(picked) < 2 and double_clicks_tail("ensemble"):
        return  # the second click landed on the fresh form, which proposes none of the runs just combined
    if len(picked) < 2:
        notices.append(("error", "Pick at least two runs to combine."))
        return
    if len(name) > NAME_MAX:  # the box took a longer paste as nothing, silently: checked here instead
        notices.append(("error", f"The name is {len(name)} characters; the most is {NAME_MAX}."))
        return
    body: dict[str, Any] = {
        "run_ids": picked,
        "weighted": bool(st.session_state.get(_form_key("weighted"), True)),
        "temperature": bool(st.session_state.get(_form_key("temperature"), True)),
        "decision": st.session_state.get(_form_key("decision")) or "prior",
        **({"name": name} if name else {}),
    }
    api, generations = client(), st.session_state.setdefault("_generations", {})

    def refused(err: ApiError) -> tuple[str, str]:
        if err.status == 404:  # a run deleted meanwhile: the form starts again from what is there now
            new_generation("ensemble", generations)
            return "error", plain(f"{err.detail}: it was deleted meanwhile; the form proposes the runs there are.")
        return "error", plain(f"Not combined: {err.detail}")

    said = combined(picked)
    submit_once(
        "ensemble",
        lambda: (lambda made: (made["id"], made))(api.create_ensemble(body)),
        seen=seen,
        said=lambda made: said(made[1]),
        refused=refused,
        outbox="ens_notice",
        keep="run_pick",
    )


def ensemble_form(dataset: str, runs: list[dict[str, Any]]) -> None:
    """Combine finished runs (a lead's): weights, temperatures and the decision rule fitted on val."""
    members, proposed = combinable(runs)
    if len(members) < 2:
        return
    st.session_state["ens_proposal"] = "-".join(map(str, proposed))
    st.subheader("Combine runs into an ensemble")
    st.caption(
        "Seeds, encoders and TF-IDF members combine; their weights, temperatures and the decision rule are "
        "fitted on val, so the test figures stay untouched. Proposed: the runs started after the latest ensemble."
    )
    shown = {
        r["id"]: f"#{r['id']} {r['name']} ({r['kind']}"
        + (f", val {r['val_macro_f1']:.3f}" if r.get("val_macro_f1") is not None else "")
        + ")"
        for r in members
    }
    if gone := [i for i in st.session_state.get(_form_key("runs")) or [] if i not in shown]:
        _new_form(("warning", f"Run {', '.join(f'#{i}' for i in gone)} is no longer there: pick the runs again."))
    show_flash("ens_notice")  # beside the form
    with st.form(_form_key("form"), border=False):
        st.multiselect(
            "Runs",
            list(shown),
            default=proposed,
            format_func=lambda i: shown[i],
            max_selections=MAX_MEMBERS,
            key=_form_key("runs"),
        )
        left, middle, right = st.columns(3)
        left.checkbox("Fit weights on val", value=True, key=_form_key("weighted"))
        middle.checkbox("Fit temperatures on val", value=True, key=_form_key("temperature"))
        right.selectbox(
            "Decision rule",
            ["prior", "none"],
            format_func=lambda d: "prior correction for macro-F1" if d == "prior" else "none (argmax)",
            key=_form_key("decision"),
        )
        st.text_input("Name (optional)", key=_form_key("name"), help=f"At most {NAME_MAX} characters")
        st.form_submit_button("Combine", on_click=create_ensemble, args=(dataset, generation("ensemble")))


def runs_section(dataset: str) -> None:
    runs = call(client().training_runs, dataset=dataset)
    if runs is None:
        return
    scorers_caption(dataset)
    active = any(r["status"] in ACTIVE for r in runs)
    may_lead = leads(dataset)  # asked once, not at every refresh of the part below

    @st.fragment(run_every=LIVE_SECONDS if active else None)
    def live() -> None:
        with fragment_messages(RUN_MESSAGES):  # a button in here reruns this part of the page only
            follow()

    def follow() -> None:
        current = call(client().training_runs, dataset=dataset) or []
        st.subheader("Runs")
        if not current:
            st.info("No training runs yet.")
            return
        frame = pd.DataFrame(current)
        st.dataframe(frame[[c for c in COLUMNS if c in frame.columns]], hide_index=True, width="stretch")
        ids = [r["id"] for r in current]
        if (made := kept("run_pick")) is not None:  # a run just started or an ensemble just made: followed
            if made[0] in ids:
                st.session_state["run_pick"] = made[0]
            drop_kept("run_pick")
        if st.session_state.get("run_pick") not in ids:  # nothing chosen (a new session, as after a reload):
            # the run training now, else one waiting for a worker, else the newest (a finished TF-IDF member is
            # newer than the seeds of its request still training)
            busy = (r["id"] for status in ("running", "queued") for r in current if r["status"] == status)
            st.session_state["run_pick"] = next(busy, ids[0])
        run_id = st.selectbox(
            "Follow run",
            ids,
            key="run_pick",
            format_func=lambda i: f"#{i} {next((r['name'] for r in current if r['id'] == i), '')}",
        )
        detail = call(client().training_run, run_id)
        if detail:
            show_run(detail, dataset, current, may_lead)
        if active and not any(r["status"] in ACTIVE for r in current):
            st.rerun()  # the last run ended: redraw once without the timer

    live()
    if may_lead:
        ensemble_form(dataset, runs)
    finished = [r["id"] for r in runs if r.get("status") == "succeeded"]
    if len(finished) >= 2:
        st.subheader("Compare two runs")
        left, right = st.columns(2)
        named = {r["id"]: f"#{r['id']} {r.get('name') or ''}".rstrip() for r in runs}
        # keyed by the newest: a run finished (an ensemble combined) since starts the two newest again, where the
        # picks kept the old pair and the new one was never compared
        first = left.selectbox("Run A", finished, index=1, key=f"cmp_a_{finished[0]}", format_func=named.get)
        second = right.selectbox("Run B", finished, index=0, key=f"cmp_b_{finished[0]}", format_func=named.get)
        try:
            table = compare_runs(client().training_run(first), client().training_run(second))
        except ApiError as err:
            st.error(plain(str(err)))
        else:
            st.dataframe(table, hide_index=True, width="stretch")


st.title("Training")
show_flash()
chosen = pick_dataset()
if chosen is None:
    st.stop()
try:
    client().training_runs(dataset=chosen["name"])
except ApiError as err:
    if err.status in (404, 405):
        st.info("This API server has no training endpoints yet (they arrive with the trainer).")
        st.stop()
    st.error(plain(str(err)))
    st.stop()
st.subheader(plain(f"Start a run on {chosen['name']}"))
st.caption("Trains on train-split originals plus approved variants (or originals only, when ticked).")
if leads(chosen["name"]):
    start_form(chosen["name"], [t["name"] for t in chosen["tasks"]])
else:
    st.caption("A lead of the dataset's project starts training; you see the runs below.")
runs_section(chosen["name"])
