"""The UI's only way to the data: an HTTP client of the augloop API (AUGLOOP_API_URL).

Validation and authorization live in the API; this module turns its answers into Python values and its errors
into `ApiError` (status, the API's `detail`, and the whole JSON body, e.g. the current state on a 409).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from core.settings import get_settings


@dataclass
class ApiError(Exception):
    status: int
    detail: str
    body: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        """What a person reads: the API's message and the field it names; a status code only for a server's
        failure (a 422 or 409 in front of "the variant changed since you loaded it" says nothing to an annotator)."""
        where = f" ({self.body['field']})" if self.body.get("field") else ""
        if self.status >= 500:
            return f"The server could not do it (HTTP {self.status}): {self.detail}{where}"
        return f"{self.detail}{where}"


def segment(value: str) -> str:
    """`value` as one path segment of a URL: every reserved character escaped (a dataset name typed as
    "evil/../other" imported into "other", "what?" got 405), and "." or ".." escaped too, which a URL would
    otherwise collapse with the segment before it."""
    escaped = quote(value, safe="")
    return escaped.replace(".", "%2E") if escaped in (".", "..") else escaped


def import_parts(
    filename: str, data: bytes, tasks: list[str], language: str | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The multipart form of an import now: the file, a `task` per label column, and the language."""
    form: dict[str, Any] = {"task": tasks}
    if language:  # none: a new dataset's default (en), an existing dataset's own
        form["language"] = language
    return {"file": (filename, data)}, form


def import_request_bytes(filename: str, data: bytes, tasks: list[str], language: str | None = None) -> int:
    """The size of the request `import_dataset` sends, which the API's AUGLOOP_MAX_REQUEST_BYTES caps: the file,
    the other fields and the multipart framing (counted, not copied)."""
    files, form = import_parts(filename, data, tasks, language)
    return int(httpx.Request("POST", "http://augloop/", files=files, data=form).headers["Content-Length"])


def api_url() -> str:
    return get_settings().api_url.rstrip("/")


class ApiClient:
    def __init__(
        self, token: str, base_url: str | None = None, timeout: float = 60.0, browser_address: str | None = None
    ) -> None:
        self.base_url = base_url or api_url()
        # The token travels in a header only: never in a URL, never in the page.
        headers = {"Authorization": f"Bearer {token}"}
        if browser_address:
            # Every UI request reaches the API from this server's address; passing on the browser's lets the
            # API's sign-in limiter count one browser's wrong tokens against that browser, not against every
            # UI user. The API believes it only from AUGLOOP_TRUSTED_PROXIES (this server).
            headers["X-Forwarded-For"] = browser_address
        self.http = httpx.Client(base_url=self.base_url + "/api/v1", timeout=timeout, headers=headers)
        # Called before a 401 is raised: the token no longer works (revoked, expired). The signed-in pages end
        # the session there (review_ui/state.client); None: the caller reads the 401 itself (signing in).
        self.on_unauthorized: Callable[[], None] | None = None

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.InvalidURL as err:  # not an HTTPError: e.g. a search text past httpx's 64 KiB per URL part
            raise ApiError(0, f"the request was not sent: {err}") from None
        except httpx.HTTPError as err:
            raise ApiError(0, f"cannot reach the API at {self.base_url}: {err}") from None
        if response.status_code == 401 and self.on_unauthorized is not None:
            self.on_unauthorized()
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {"detail": response.text[:500] or response.reason_phrase}
            detail = body.get("detail") if isinstance(body, dict) else None
            raise ApiError(
                response.status_code,
                str(detail or response.reason_phrase),
                body if isinstance(body, dict) else {},
            )
        if response.status_code == 204:
            return None
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.content

    def get(self, path: str, **params: Any) -> Any:
        clean = {k: v for k, v in params.items() if v is not None and v != "" and v != []}
        return self.request("GET", path, params=clean)

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.request("POST", path, json=body or {})

    # Who and what
    def me(self, *, timeout: float | None = None) -> dict[str, Any]:
        """The signed-in user; `timeout` (seconds) instead of the client's for this one request."""
        return self.request("GET", "/me", **({"timeout": timeout} if timeout is not None else {}))

    def datasets(self) -> list[dict[str, Any]]:
        return self.get("/datasets")

    def dataset(self, name: str) -> dict[str, Any]:
        return self.get(f"/datasets/{segment(name)}")

    def update_dataset(self, name: str, **fields: Any) -> dict[str, Any]:
        return self.request("PATCH", f"/datasets/{segment(name)}", json=fields)

    def delete_dataset(self, name: str) -> None:
        self.request("DELETE", f"/datasets/{segment(name)}")

    def protected_terms(self, name: str) -> dict[str, Any]:
        return self.get(f"/datasets/{segment(name)}/protected-terms")

    def edit_protected_terms(self, name: str, add: list[str], remove: list[str]) -> dict[str, Any]:
        return self.post(f"/datasets/{segment(name)}/protected-terms", {"add": add, "remove": remove})

    def stats(self, name: str) -> dict[str, Any]:
        return self.get(f"/datasets/{segment(name)}/stats")

    def import_dataset(
        self, name: str, filename: str, data: bytes, tasks: list[str], language: str | None = None
    ) -> dict[str, Any]:
        files, form = import_parts(filename, data, tasks, language)
        return self.request("POST", f"/datasets/{segment(name)}/import", files=files, data=form)

    def export(self, name: str, fmt: str, include: list[str]) -> bytes:
        return self.request(
            "GET", f"/datasets/{segment(name)}/export", params={"format": fmt, "include": ",".join(include)}
        )

    # Review
    def review_queue(self, name: str, **params: Any) -> dict[str, Any]:
        return self.get(f"/datasets/{segment(name)}/review-queue", **params)

    def sample(self, sample_id: int) -> dict[str, Any]:
        return self.get(f"/samples/{sample_id}")

    def decide(
        self, sample_id: int, decision: str, version: int, reason: str | None = None, text: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"decision": decision, "version": version}
        if reason is not None:
            body["reason"] = reason
        if text is not None:
            body["text"] = text
        return self.post(f"/samples/{sample_id}/decision", body)

    def undo(self, sample_id: int, version: int) -> dict[str, Any]:
        return self.post(f"/samples/{sample_id}/undo", {"version": version})

    def my_latest_decision(self, name: str) -> int | None:
        found = self.get(f"/datasets/{segment(name)}/my-latest-decision").get("sample_id")
        return int(found) if found is not None else None

    def cards(self, sample_ids: list[int]) -> list[dict[str, Any]]:
        return self.get("/review-cards", ids=",".join(map(str, sample_ids)))

    def next_batch(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.post(f"/datasets/{segment(name)}/assignments", body)

    def renew_leases(self, name: str) -> dict[str, Any]:
        return self.post(f"/datasets/{segment(name)}/assignments/renew")

    def release_leases(self, name: str) -> dict[str, Any]:
        return self.request("DELETE", f"/datasets/{segment(name)}/assignments")

    def annotators(self, name: str) -> dict[str, Any]:
        return self.get(f"/datasets/{segment(name)}/annotators")

    def label_model(self, name: str) -> dict[str, Any]:
        return self.get(f"/datasets/{segment(name)}/label-model")

    def choose_label_model(self, name: str, model_id: int) -> dict[str, Any]:
        return self.post(f"/datasets/{segment(name)}/label-model", {"model_id": model_id})

    def bulk(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.post(f"/datasets/{segment(name)}/bulk-decisions", body)

    def progress(self, name: str) -> dict[str, Any]:
        return self.get(f"/datasets/{segment(name)}/review-progress")

    def agreement(self, name: str) -> dict[str, Any]:
        return self.get(f"/datasets/{segment(name)}/agreement")

    # Augmentation
    def augmenters(self, name: str) -> list[dict[str, Any]]:
        return self.get(f"/datasets/{segment(name)}/augmenters")

    def plans(self, name: str, limit: int = 10, queued: bool = False) -> list[dict[str, Any]]:
        return self.get(f"/datasets/{segment(name)}/augmentation-plans", limit=limit, queued=str(queued).lower())

    def create_plan(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.post(f"/datasets/{segment(name)}/augmentation-plans", body)

    # Jobs, training, tokens
    def jobs(self, **params: Any) -> dict[str, Any]:
        return self.get("/jobs", **params)

    def cancel_job(self, job_id: int) -> dict[str, Any]:
        return self.post(f"/jobs/{job_id}/cancel")

    def training_runs(self, **params: Any) -> list[dict[str, Any]]:
        return self.get("/training-runs", **params)

    def training_run(self, run_id: int) -> dict[str, Any]:
        return self.get(f"/training-runs/{run_id}")

    def create_ensemble(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.post("/ensembles", body)

    def start_training(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.post("/training-runs", body)

    def training_estimate(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.post("/training-estimates", body)

    def impact_reports(self, dataset: str) -> list[dict[str, Any]]:
        return self.get(f"/datasets/{segment(dataset)}/impact-reports")

    def impact_estimate(self, dataset: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.post(f"/datasets/{segment(dataset)}/impact-estimates", body)

    def start_impact_report(self, dataset: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.post(f"/datasets/{segment(dataset)}/impact-reports", body)

    def tokens(self) -> list[dict[str, Any]]:
        return self.get("/tokens")

    def create_token(self, name: str, role: str, expires_in_days: float | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name, "role": role}
        if expires_in_days:
            body["expires_in_days"] = expires_in_days
        return self.post("/tokens", body)

    def revoke_token(self, token_id: int) -> dict[str, Any]:
        return self.post(f"/tokens/{token_id}/revoke")

    # Projects and their members (admins manage them)
    def projects(self) -> list[dict[str, Any]]:
        return self.get("/projects")

    def create_project(self, name: str, display_name: str | None = None) -> dict[str, Any]:
        return self.post("/projects", {"name": name, **({"display_name": display_name} if display_name else {})})

    def members(self, project: str) -> list[dict[str, Any]]:
        return self.get(f"/projects/{segment(project)}/members")

    def set_member(self, project: str, user: str, role: str) -> dict[str, Any]:
        return self.request("PUT", f"/projects/{segment(project)}/members", json={"user": user, "role": role})

    def remove_member(self, project: str, user: str) -> None:
        return self.request("DELETE", f"/projects/{segment(project)}/members/{segment(user)}")
