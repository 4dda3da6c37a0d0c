"""Datasets: class balance per task before and after approved augmentation; the project's leads (and admins)
set the review rules (reviews per variant, guidelines) and export; admins also import and delete."""

from __future__ import annotations

import shlex
from typing import Any

import pandas as pd
import streamlit as st

from core.balance import imbalance_change, imbalance_shown
from core.errors import ValidationFailed
from core.names import check_slug
from core.settings import get_settings
from review_ui import upload_limit_mb
from review_ui.client import ApiError, import_request_bytes
from review_ui.progress import show_annotators, show_class_progress
from review_ui.render import plain, quantity
from review_ui.state import (
    call,
    client,
    drop_kept,
    flash,
    is_admin,
    kept,
    page_with_dataset,
    role_in_project_of,
    show_flash,
    submit_key,
    submit_once,
)

BEFORE, AFTER = "train originals", "train + approved variants"
LIVE_SECONDS = 15
IMPORT_MESSAGES = "_flash_import"  # the import's refusals, drawn under its form (not at the top of the page)


def balance_frame(info: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for label, e in info["labels"].items():
        variants = e.get("by_origin", {})
        rows.append(
            {
                "class": label,
                BEFORE: e["train_original"],
                AFTER: e["train_with_approved"],
                "val": e["by_split"]["val"],
                "test": e["by_split"]["test"],
                "pending": sum(n for k, n in variants.items() if k.endswith(":pending")),
                "approved": sum(n for k, n in variants.items() if k.endswith(":approved")),
                "rejected": sum(n for k, n in variants.items() if k.endswith(":rejected")),
            }
        )
    return pd.DataFrame(rows)


def show_balance(name: str) -> None:
    stats = call(client().stats, name)
    if not stats:
        return
    st.caption(f"{quantity(stats['samples'], 'sample')} in all (originals and variants of every status)")
    for task, info in stats["tasks"].items():
        st.subheader(plain(f"Task: {task}"))
        frame = balance_frame(info)
        chart, numbers = st.columns([0.6, 0.4])
        with chart:
            st.bar_chart(
                frame,
                x="class",
                y=[BEFORE, AFTER],
                stack=False,
                sort=False,
                y_label="examples in train",
                color=["#9aa5b1", "#2e8b57"],
            )
        with numbers:
            a, b = st.columns(2)
            empty = info.get("classes_without_train_text") or []
            a.metric("Imbalance (largest / smallest)", imbalance_shown(info) or "n/a")
            # the difference of the two ratios as they read (2.4× → 1.7× said "-0.8×"); no arrow for "no change":
            # a red "↑ +0.0×" reads as a regression that did not happen
            change = imbalance_change(info)
            b.metric(
                "With approved variants",
                imbalance_shown(info, with_approved=True) or "n/a",  # ∞ as before it, where a class has none
                delta=f"{change:+.1f}×" if change else None,
                delta_color="inverse",
            )
        # Full width below the chart: eight columns in the side column were cut off on the right.
        st.dataframe(frame, hide_index=True, width="stretch")
        if info.get("missing_label"):
            st.caption(f"{quantity(info['missing_label'], 'sample has', 'samples have')} no {plain(task)} label")
        if empty:
            st.caption(
                f"No train text of {', '.join(plain(label) for label in empty)}: a model cannot learn "
                f"{'this class' if len(empty) == 1 else 'these classes'} (import or submit some)"
            )


# The review settings' widgets and the dataset field each one edits.
SETTINGS_FIELDS = {
    "ds_k": "reviews_required",
    "ds_distribute": "distribute_work",
    "ds_lease": "lease_minutes",
    "ds_guidelines": "guidelines",
}


def stored_settings(dataset: dict[str, Any]) -> dict[str, Any]:
    return {
        "reviews_required": int(dataset["reviews_required"]),
        "distribute_work": bool(dataset.get("distribute_work")),
        "lease_minutes": int(dataset.get("lease_minutes") or 15),
        "guidelines": dataset["guidelines"],
    }


def show_stored_settings(dataset: dict[str, Any]) -> None:
    """The form shows the chosen dataset's settings as the server has them now: when the dataset changes, or a
    colleague changed them since the page last read them, the widgets start again from the stored values. (A
    widget keyed alone keeps its state and ignores a new `value=`: the form showed the first dataset's settings
    on every dataset, and Save wrote them there; an attacker's find.)"""
    shown = (dataset["name"], stored_settings(dataset))
    # Streamlit drops a widget's state in a run that does not draw it (another page, a dataset one does not
    # lead): the widgets then came back empty while `ds_shown` stayed, and Save sent k = 1 and no guidelines.
    if st.session_state.get("ds_shown") != shown or any(key not in st.session_state for key in SETTINGS_FIELDS):
        for key, field in SETTINGS_FIELDS.items():
            st.session_state[key] = shown[1][field]
        st.session_state["ds_shown"] = shown


def save_settings(name: str) -> None:
    """Send what the user changed, and only that: a field left as the page read it is not sent, so a
    colleague's change to it since then stays (Save put back the guidelines the page had read)."""
    shown_name, shown = st.session_state.get("ds_shown") or (None, {})
    if shown_name != name:  # the form was drawn for another dataset: nothing of it is this one's
        flash("error", "The dataset changed under the form; nothing was saved. Check the values and save again.")
        return
    fields = {
        field: st.session_state[key] for key, field in SETTINGS_FIELDS.items() if st.session_state[key] != shown[field]
    }
    if not fields:
        flash("info", "Nothing changed; nothing was saved.")
        return
    # A new k waits for the decisions under way and re-evaluates every reviewed variant (sent only when changed).
    saved = call(client().update_dataset, name, **fields)
    if saved is not None:
        moved = saved.get("status_changes") or {}
        changes = ", ".join(f"{n:,} {transition}" for transition, n in sorted(moved.items()))
        flash(
            "success",
            "Saved the review settings."
            + (f" The new rule re-evaluated the reviewed variants: {changes}." if changes else ""),
        )


def reevaluate(name: str) -> None:
    """The dataset's k as the server has it now, sent again: the API re-evaluates every reviewed variant under
    the rules of now. (The k the page had read put back an older k, should a colleague have changed it since.)"""
    current = call(client().dataset, name)
    if current is None:
        return
    saved = call(client().update_dataset, name, reviews_required=int(current["reviews_required"]))
    if saved is not None:
        moved = saved.get("status_changes") or {}
        changes = ", ".join(f"{n:,} {transition}" for transition, n in sorted(moved.items()))
        flash("success", f"Re-evaluated the reviewed variants: {changes or 'none changed'}.")


def any_size_way(filename: str, into: str, tasks: list[str], language: str | None) -> str:
    """The ways a file past the Import tab's cap imports (plain text): the command on the server, or a job."""
    words = ["augloop", "import", filename, "--dataset", into, *(f"--task={t}" for t in tasks)]
    command = shlex.join([*words, f"--language={language}"] if language else words)
    return (
        f"A file of any size imports on the server with: {command} (or as a job: POST /api/v1/datasets/{into}/imports)."
    )


def import_form(current: str | None) -> None:
    limit_mb = upload_limit_mb()
    with st.form("import", clear_on_submit=False):
        upload = st.file_uploader(
            "CSV, JSONL or Parquet (UTF-8)", type=["csv", "jsonl", "json", "parquet"], max_upload_size=limit_mb
        )
        cap = get_settings().max_request_bytes  # said as the refusal says it (rounded up, 1.4 MB read "2 MB")
        st.caption(f"Up to {cap / 2**20:.1f} MB here (AUGLOOP_MAX_REQUEST_BYTES); any size: `augloop import FILE …`")
        target = st.text_input("Dataset name (new or existing)", value=current or "")
        tasks = st.text_input("Label columns (tasks), comma-separated", placeholder="bias, message")
        language = st.text_input("Language of a new dataset", placeholder="en")
        go = st.form_submit_button("Import", type="primary", key=submit_key("import"))
    show_flash(IMPORT_MESSAGES)
    if go:
        names = [t.strip() for t in tasks.split(",") if t.strip()]
        if upload is None or not target.strip() or not names:
            st.error("Choose a file, a dataset name and at least one label column.")
            return
        try:  # the API's rule, said before the upload (a name with "/" or "?" got a bare 404 or 405)
            check_slug(target.strip(), field="name", what="a dataset name")
        except ValidationFailed as err:
            st.error(plain(f"{err} (name)"))
            return
        language_tag = language.strip() or None  # none: a new dataset's default, an existing dataset's own
        api, into, filename, data = client(), target.strip(), upload.name, upload.getvalue()
        way = any_size_way(filename, into, names, language_tag)
        if import_request_bytes(filename, data, names, language_tag) > (cap := get_settings().max_request_bytes):
            st.error(  # here, before the upload: the API refused it after the whole upload, at the top of the page
                plain(
                    f"{filename} is {len(data) / 2**20:.1f} MB: the Import tab sends up to {cap / 2**20:.1f} MB, "
                    f"the form included (AUGLOOP_MAX_REQUEST_BYTES). {way}"
                )
            )
            return

        def refused(err: ApiError) -> tuple[str, str]:  # the API's own cap, when it is below this UI's setting
            return "error", plain(f"{err}. {way}" if err.status == 413 else str(err))

        # Once per form generation, its result kept for the next run, drawn there and then dropped
        # (review_ui.state.submit_once: a double click imported the file twice and showed "0 imported")
        submit_once(
            "import",
            lambda: (into, api.import_dataset(into, filename, data, names, language_tag)),
            keep="import",
            refused=refused,
            outbox=IMPORT_MESSAGES,
        )
        st.rerun()
    if shown := kept("import"):
        imported_into, result = shown
        st.success(
            plain(
                f"Imported {quantity(result['imported'], 'sample')} into {imported_into} "
                f"({quantity(result['duplicates_skipped'], 'duplicate')} skipped)."
            )
        )
        st.json(result["split_counts"])
        warnings = {
            "near_duplicate_groups_across_splits": "group(s) of near-duplicate rows span splits",
            "near_existing_across_splits_count": "new row(s) near a text on the other side of the train/eval line",
            "duplicates_of_reviewed_samples": "row(s) not imported: their text is in the dataset as a sample "
            "that is not an original (its review decides)",
        }
        for key, what in warnings.items():
            if result.get(key):
                st.warning(f"{result[key]} {what}.")
        for warning in result.get("warnings") or []:  # before training: empty splits, odd labels
            st.warning(plain(str(warning)))
        drop_kept("import")


def protected_terms_form(name: str) -> None:
    """The dataset's topic words, which WordNet and the masked LM never replace (seeded at its first augmentation
    with the words most associated with each class): a lead adds and removes them here, where only the API and
    the CLI could."""
    held = call(client().protected_terms, name)
    if held is None:
        return
    terms = held["terms"]
    st.caption(
        f"{quantity(len(terms), 'protected term')}: WordNet and the masked LM never replace them, in any inflection (a "
        "phrase protects each of its words); a job running now checks them again before it stores its variants."
        + ("" if held.get("seeded_at") else " Seeded with each class's most telling words at the first augmentation.")
    )
    if terms:
        frame = pd.DataFrame(
            [{"term": t["term"], "origin": t["origin"], "task": t["task"], "class": t["label"]} for t in terms]
        )
        st.dataframe(frame, hide_index=True, width="stretch")  # cells are text, never markdown
    with st.form(f"terms_{name}", clear_on_submit=False):
        added = st.text_input("Add (comma-separated words or phrases)", key=f"terms_add_{name}")
        removed = st.multiselect("Remove", [t["term"] for t in terms], key=f"terms_remove_{name}")
        if st.form_submit_button("Save protected terms", type="primary"):
            add = [t.strip() for t in added.split(",") if t.strip()]
            if not add and not removed:
                st.info("Nothing to change: type terms to add or pick terms to remove.")
                return
            try:
                after = client().edit_protected_terms(name, add, list(removed))
            except ApiError as err:
                st.error(plain(str(err)))  # the typed terms stay in the field
                return
            flash("success", plain(f"Protected terms saved: {len(after['terms'])} in all."))
            st.session_state.pop(f"terms_add_{name}", None)
            st.rerun()


def manage_tools(dataset: dict[str, Any] | None, admin: bool) -> None:
    """Admins: every tab; a lead of the dataset's project: its review settings, protected terms and exports (the
    API decides either way: these tabs only spare the others requests that would be refused)."""
    st.divider()
    st.header("Manage")
    names = ["Review settings", "Protected terms", "Import", "Export", "Delete"]
    if not admin:
        names = ["Review settings", "Protected terms", "Export"]
    tabs = dict(zip(names, st.tabs(names), strict=True))
    name = dataset["name"] if dataset else None
    with tabs["Review settings"]:
        if dataset:
            show_stored_settings(dataset)
            st.number_input("Reviews per variant (a majority of them decides)", 1, 15, key="ds_k")
            st.toggle(
                "Share out the pending variants: each annotator gets their own (leased) variants",
                key="ds_distribute",
                help="With k reviews per variant, a variant goes to k different annotators. A lease not renewed "
                "(the annotator left) frees their share for the others.",
            )
            st.number_input(
                "Lease length (minutes without activity before a share goes back)", 1, 24 * 60, key="ds_lease"
            )
            st.text_area("Guidelines (plain text, shown beside the review queue)", height=200, key="ds_guidelines")
            st.button("Save review settings", on_click=save_settings, args=(name,), type="primary")
            st.button(
                "Re-evaluate every reviewed variant under today's rules",
                key="ds_reevaluate",
                on_click=reevaluate,
                args=(name,),
                help="What an upgrade's new review rules would decide of variants decided before them (an edit "
                "approved by its writer alone before 2026-12-06 waits for another member's approval). The same "
                "k, sent again: nothing else changes.",
            )
    with tabs["Protected terms"]:
        if dataset:
            protected_terms_form(dataset["name"])
    if "Import" in tabs:
        with tabs["Import"]:
            import_form(name)
    with tabs["Export"]:
        if dataset:
            fmt = st.radio("Format", ["csv", "jsonl"], horizontal=True, key="exp_fmt")
            include = st.multiselect(
                "Include",
                ["original", "approved", "pending", "rejected"],
                default=["original", "approved"],
                key="exp_include",
            )
            st.caption(
                "Approved rows whose text is a near-duplicate of a val/test text are left out, as every training "
                "run leaves them out (an export job, or augloop export, counts them); the near_val_test column "
                "flags the others."
            )
            if st.button("Prepare export", disabled=not include):
                data = call(client().export, name, fmt, include)
                if data is not None:
                    st.session_state["export"] = (name, fmt, data)
            ready = st.session_state.get("export")
            if ready and ready[0] == name:
                st.download_button(
                    plain(f"Download {name}.{ready[1]} ({len(ready[2]):,} bytes)"),
                    ready[2],
                    file_name=f"{name}.{ready[1]}",
                )
    if "Delete" not in tabs:
        return
    with tabs["Delete"]:
        if dataset:
            typed = st.text_input(
                "Type the dataset's name to delete it with its samples, reviews and jobs", key="del_confirm"
            )
            if st.button("Delete dataset", disabled=typed != name, type="primary", key=submit_key("delete")):
                api = client()  # once (a double click's second click answered the deletion with "not found")
                deleted = submit_once(
                    "delete",
                    lambda: api.delete_dataset(name) or True,
                    said=lambda _: ("success", plain(f"Deleted dataset {name}.")),
                )
                if deleted:
                    st.session_state.pop("current_dataset", None)
                st.rerun()


@st.fragment(run_every=LIVE_SECONDS)
def review_progress(name: str) -> None:
    """Review progress toward the plan and per annotator, refreshed while the page is open."""
    left, right = st.columns([0.55, 0.45], gap="medium")
    with left:
        st.subheader("Review progress toward the plan")
        show_class_progress(call(client().progress, name))
    with right:
        st.subheader("Annotators")
        show_annotators(call(client().annotators, name))
        st.caption(f"Updated every {LIVE_SECONDS} s.")


chosen = page_with_dataset("Datasets")
if chosen:
    review_progress(chosen["name"])
    show_balance(chosen["name"])
if is_admin() or (chosen is not None and role_in_project_of(chosen["name"]) == "lead"):
    manage_tools(chosen, admin=is_admin())
