"""Session helpers shared by the pages: the signed-in client, one-shot messages, and API calls that report
their errors on the page instead of crashing it."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import streamlit as st

from review_ui.client import ApiClient, ApiError

T = TypeVar("T")


def client() -> ApiClient:
    """The API client of the signed-in user; the token lives only in this session's state."""
    token = st.session_state.get("token")
    if not token:
        st.stop()
    cached = st.session_state.get("_client")
    if cached is None or cached[0] != token:
        cached = (token, ApiClient(token))
        st.session_state["_client"] = cached
    return cached[1]


def user() -> dict[str, Any]:
    return st.session_state.get("user") or {}


def is_admin() -> bool:
    return user().get("role") == "admin"


def flash(kind: str, message: str) -> None:
    """A message for the next run (callbacks run before the page, which then shows it)."""
    st.session_state.setdefault("_flash", []).append((kind, message))


def show_flash() -> None:
    for kind, message in st.session_state.pop("_flash", []):
        {"success": st.success, "warning": st.warning, "error": st.error}.get(kind, st.info)(message)


def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """Run an API call; on failure show the API's message and return None."""
    try:
        return fn(*args, **kwargs)
    except ApiError as err:
        st.error(str(err))
        return None


def datasets() -> list[dict[str, Any]]:
    return call(client().datasets) or []


def pick_dataset(where: Any = None, key: str = "dataset") -> dict[str, Any] | None:
    """A dataset chooser shared by the pages (the choice follows the user from page to page)."""
    items = datasets()
    if not items:
        st.info("No dataset yet. An admin imports one on the Datasets page or with `augloop import`.")
        return None
    names = [d["name"] for d in items]
    current = st.session_state.get("current_dataset")
    index = names.index(current) if current in names else 0
    chosen = (where or st).selectbox("Dataset", names, index=index, key=key)
    st.session_state["current_dataset"] = chosen
    return items[names.index(chosen)]


def parse_run_inputs(seeds: str, config: str) -> tuple[list[int], dict[str, Any]]:
    """The seeds ("1, 2, 3") and trainer-config overrides (JSON) typed into a start form; ValueError if bad."""
    overrides = json.loads(config or "{}")
    return [int(s) for s in seeds.replace(" ", "").split(",") if s], overrides
