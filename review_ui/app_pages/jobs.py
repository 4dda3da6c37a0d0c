"""Jobs: queued, running and finished work with progress, kept/dropped counts, errors, and cancel."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from review_ui.render import quantity, small_html
from review_ui.state import call, call_and_flash, client, fragment_messages, is_admin, show_flash

STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"]
LIST_MESSAGES = "_flash_jobs"  # the job list's (a fragment: a Cancel in it reruns it alone, its message there)


def cancel(job_id: int) -> None:
    stopping = f"Asked job #{job_id} to stop (a running job stops at its next progress report)."
    call_and_flash(stopping, client().cancel_job, job_id, outbox=LIST_MESSAGES)


def counts_line(info: dict[str, Any]) -> str:
    """ "generated 120 · kept 100 · dropped 20 (duplicate 15, leakage 5)": read as a sentence, not a dict."""
    bits = []
    for key in ("generated", "kept", "dropped"):
        value = info.get(key)
        if isinstance(value, dict):
            parts = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in sorted(value.items()) if v)
            total = sum(v for v in value.values() if isinstance(v, int | float))
            bits.append(f"{key} {total}" + (f" ({parts})" if parts else ""))
        elif value is not None:
            bits.append(f"{key} {value}")
    return " · ".join(bits)


def result_frame(result: dict[str, Any]) -> pd.DataFrame:
    """A job's result as a two-column table (nested values flattened into dotted names)."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(value, list):
            flat[prefix] = ", ".join(map(str, value)) if len(value) <= 20 else f"{len(value)} items"
        else:
            flat[prefix] = value

    walk("", result)
    return pd.DataFrame({"field": list(flat), "value": [str(v) for v in flat.values()]})


def counters(info: dict[str, Any]) -> pd.DataFrame | None:
    """A handler's live counters (kept, dropped per filter, epoch, loss...) as a two-column table."""
    flat = {}
    for key, value in info.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    if not flat:
        return None
    return pd.DataFrame({"counter": list(flat), "value": [str(v) for v in flat.values()]})


def outages_said(outages: int) -> str:
    """The attempts a job was given back for database outages (they do not count against its attempts)."""
    if not outages:
        return ""
    return f" · {outages} database outage{'s' if outages > 1 else ''} (not counted)"


def works_for(params: dict[str, Any]) -> str:
    """What a job works for beside its dataset: its training run, the runs an LR selection chooses for, the
    impact report they belong to (the page named none: a report's dozen train jobs read alike)."""
    bits = []
    if isinstance(run := params.get("run_id"), int):
        bits.append(f"run #{run}")
    runs = [r for r in params.get("run_ids") or [] if isinstance(r, int)]
    if runs:
        shown = ", ".join(f"#{r}" for r in runs[:6])
        bits.append(f"runs {shown}" + (f" and {len(runs) - 6} more" if len(runs) > 6 else ""))
    payload = params.get("train_payload")
    report = params.get("impact_report_id") or (payload.get("impact_report_id") if isinstance(payload, dict) else None)
    if isinstance(report, int):
        bits.append(f"impact report #{report}")
    return " · ".join(bits)


def job_card(job: dict[str, Any], may_cancel: bool) -> None:
    params = job.get("params") or {}
    with st.container(border=True, key=f"job-{job['id']}"):
        head, action = st.columns([0.8, 0.2])
        head.html(
            small_html(
                f"#{job['id']} · {job['kind']}"
                + (f" · {dataset}" if (dataset := params.get("dataset")) else "")
                + (f" · {belongs}" if (belongs := works_for(params)) else "")
                + f" · {job['status']} · attempt {job['attempts']}/"
                f"{job['max_attempts']} · created {job['created_at'][:19].replace('T', ' ')}"
                + (outages_said(job.get("outages") or 0))
                + (" · cancel requested" if job["cancel_requested"] else "")
            )
        )
        if job["status"] in ("queued", "running") and not job["cancel_requested"] and may_cancel:
            action.button("Cancel", key=f"cancel_{job['id']}", on_click=cancel, args=(job["id"],))
        if job.get("worker_silent"):
            since = (job.get("lease_until") or "")[11:19]
            st.warning(
                f"Its worker stopped answering (its lease ran out at {since} UTC): the job is re-queued, or ends "
                "on its last attempt, when a worker next looks for work. Is a worker running?"
            )
        done, total = job["progress_done"], job["progress_total"]
        if total:
            st.progress(min(1.0, done / total), text=f"{done} / {total}")
        elif job["status"] == "running":
            st.progress(0.0, text="starting")
        info = job.get("progress_info") or {}
        line = counts_line(info)
        if line:
            st.html(small_html(line))
        table = counters(info)
        if table is not None:
            with st.expander("Counters"):
                st.dataframe(table, hide_index=True, width="stretch")
        if job.get("last_error"):
            st.code(job["last_error"], language=None)
        advice = (job.get("result") or {}).get("advice")
        if isinstance(advice, str) and advice:
            st.html(small_html("⚠ " + advice))  # escaped: plain text, never markdown
        if job.get("result"):
            with st.expander("Result"):
                st.dataframe(result_frame(job["result"]), hide_index=True, width="stretch")


st.title("Jobs")
show_flash()
statuses = st.multiselect("Status", STATUSES, default=[], key="jobs_status", placeholder="any status")
auto = st.toggle("Refresh every 5 seconds", key="jobs_auto")


# The datasets whose jobs this user may cancel (None: every one, an admin's), by id: a lead's, project by
# project (a lead of one project who is an annotator of another was offered Cancel on the other's jobs, which met
# the API's 403). Asked once, not at every refresh.
def led_dataset_ids() -> set[int] | None:
    if is_admin():
        return None
    lead_of = {p["name"] for p in call(client().projects) or [] if p.get("my_role") == "lead"}
    return {d["id"] for d in call(client().datasets) or [] if d.get("project") in lead_of} if lead_of else set()


led = led_dataset_ids()


def may_cancel(job: dict[str, Any]) -> bool:
    return led is None or job.get("dataset_id") in led


@st.fragment(run_every=5 if auto else None)
def job_list() -> None:
    with fragment_messages(LIST_MESSAGES):  # a Cancel in here reruns this part of the page only
        draw_jobs()


def draw_jobs() -> None:
    data = call(client().jobs, status=",".join(statuses) or None, limit=100)
    if data is None:
        return
    running = sum(1 for j in data["items"] if j["status"] == "running")
    st.caption(f"{quantity(data['total'], 'job')} · {running} running · newest first")
    if not data["items"]:  # with a status chosen, "No jobs yet." said so while other jobs were listed a click away
        chosen = ", ".join(statuses[:-1]) + " or " + statuses[-1] if len(statuses) > 1 else "".join(statuses)
        st.info(f"No {chosen} jobs." if statuses else "No jobs yet.")
    for job in data["items"]:
        job_card(job, may_cancel(job))


job_list()
