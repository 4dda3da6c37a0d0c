"""Which augmenters this process can load, checked without loading any model.

A worker computes this when it starts and publishes it (db.worker_presence); the API and the UI show it,
with the setting to change for every augmenter that cannot run. States:

* `ready`: the data or the model files are on this machine (a local directory, or the Hugging Face cache);
* `download`: a hub model that is not cached yet; the worker downloads it on its first job (needs internet);
* `unavailable`: it cannot run as configured; `reason` says why and `setting` names what to change.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from core.settings import Settings, get_settings

READY, DOWNLOAD, UNAVAILABLE = "ready", "download", "unavailable"
_STATE_ORDER = {READY: 0, DOWNLOAD: 1, UNAVAILABLE: 2}


def _offline() -> bool:
    return any(
        os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
        for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def model_status(name: str, setting: str) -> dict[str, Any]:
    """Where the model `name` would load from, without loading it."""
    path = Path(name).expanduser()
    looks_local = name.startswith((".", "/", "~")) or path.exists()
    if looks_local:
        if (path / "config.json").is_file():
            return {"state": READY, "model": name, "source": "local directory"}
        problem = "does not exist" if not path.exists() else "has no config.json (not written by save_pretrained)"
        return {
            "state": UNAVAILABLE,
            "model": name,
            "setting": setting,
            "reason": f"the directory {name} {problem}; set {setting} to a model directory or a hub id",
        }
    return hub_status(name, setting)


def hub_status(name: str, setting: str) -> dict[str, Any]:
    """Where the hub model `name` would load from (the Hugging Face cache, or a download), without loading it and
    without looking for a folder of that name."""
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(name, "config.json", cache_dir=os.environ.get("HF_HUB_CACHE") or None)
    except Exception:  # noqa: BLE001 - an invalid repo id: from_pretrained would fail the same way
        cached = None
    if isinstance(cached, str):
        return {"state": READY, "model": name, "source": "Hugging Face cache"}
    if _offline():
        return {
            "state": UNAVAILABLE,
            "model": name,
            "setting": setting,
            "reason": f"{name} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1; set {setting} "
            "to a local model directory, or unset HF_HUB_OFFLINE on a machine with internet "
            "so the worker downloads it",
        }
    return {
        "state": DOWNLOAD,
        "model": name,
        "source": "Hugging Face hub",
        "note": f"{name} downloads on the first job (needs internet)",
    }


def _worst(statuses: list[dict[str, Any]]) -> dict[str, Any]:
    return max(statuses, key=lambda s: _STATE_ORDER[s["state"]])


def method_status(method: str, settings: Settings) -> dict[str, Any]:
    if method == "wordnet":
        from workers.augment.wordnet_data import INSTALL_HINT, missing_wordnet_files, nltk_data_dir

        root = nltk_data_dir(settings)
        missing = missing_wordnet_files(root)
        if missing:
            return {
                "state": UNAVAILABLE,
                "model": "wordnet-3.0",
                "setting": "AUGLOOP_NLTK_DATA",
                "reason": f"WordNet is missing from {root} ({', '.join(missing[:3])}…): {INSTALL_HINT}",
            }
        return {"state": READY, "model": "wordnet-3.0", "source": str(root)}
    if method == "mlm":
        return model_status(settings.mlm_model, "AUGLOOP_MLM_MODEL")
    if method == "backtranslation":
        if not settings.bt_routes:
            return {
                "state": UNAVAILABLE,
                "model": "",
                "setting": "AUGLOOP_BT_ROUTES",
                "reason": "no back-translation route is configured; set AUGLOOP_BT_ROUTES",
            }
        routes = []
        for route in settings.bt_routes:
            legs = [model_status(str(route.get(leg, "")), "AUGLOOP_BT_ROUTES") for leg in ("forward", "backward")]
            worst = _worst(legs)
            routes.append(
                {
                    **worst,
                    # the route's source language: the models' own `source` (where they load from) is the note
                    "source": route.get("source"),
                    "pivot": route.get("pivot"),
                    "note": worst.get("note") or worst.get("source"),
                    "model": " → ".join(str(route.get(leg, "")) for leg in ("forward", "backward")),
                }
            )
        best = min(routes, key=lambda r: _STATE_ORDER[r["state"]])
        return {**best, "routes": routes}
    if method == "paraphrase":
        if settings.paraphrase_api_url:
            return endpoint_status(settings)
        return model_status(settings.paraphrase_model, "AUGLOOP_PARAPHRASE_MODEL")
    raise ValueError(f"unknown augmentation method {method!r}")


def endpoint_status(settings: Settings) -> dict[str, Any]:
    """An OpenAI-compatible endpoint, asked once for its models (GET {url}/models, a few seconds at most)."""
    import httpx

    from workers.augment.paraphrase import endpoint_url, shown_url

    url = shown_url(settings.paraphrase_api_url)  # what every member may read: no credentials, no query
    model = settings.paraphrase_api_model or settings.paraphrase_model
    headers = {"Authorization": f"Bearer {settings.paraphrase_api_key}"} if settings.paraphrase_api_key else {}
    try:
        response = httpx.get(endpoint_url(settings.paraphrase_api_url, "/models"), headers=headers, timeout=3.0)
        response.raise_for_status()
        listed = response.json()
        data = listed.get("data", []) if isinstance(listed, dict) else None
        if not isinstance(data, list):
            raise ValueError("GET /models answered no list of models")
        served = [str(m.get("id")) for m in data if isinstance(m, dict)]
    except (httpx.HTTPError, ValueError) as err:
        return {
            "state": UNAVAILABLE,
            "model": model,
            "setting": "AUGLOOP_PARAPHRASE_API_URL",
            "reason": f"the paraphrase endpoint {url} did not answer GET /models when this worker started "
            f"({type(err).__name__}); start it, or correct AUGLOOP_PARAPHRASE_API_URL",
        }
    if served and model not in served:
        return {
            "state": UNAVAILABLE,
            "model": model,
            "setting": "AUGLOOP_PARAPHRASE_API_MODEL",
            "reason": f"{url} serves {served[:5]}, not {model!r}; set AUGLOOP_PARAPHRASE_API_MODEL",
        }
    return {"state": READY, "model": model, "source": url}


def capabilities(settings: Settings | None = None) -> dict[str, dict[str, Any]]:
    """The status of every augmentation method in this process's settings."""
    from workers.augment.catalog import METHODS

    settings = settings or get_settings()
    return {method: method_status(method, settings) for method in METHODS}


NO_WORKER = "no_worker"


def for_dataset(
    language: str, worker_capabilities: list[dict[str, dict[str, Any]]], settings: Settings | None = None
) -> list[dict[str, Any]]:
    """Per method, whether augment jobs for a dataset in `language` can run now: the language must be covered
    (the API's settings decide, as when a request is validated) and a live worker must be able to load it.

    `worker_capabilities` holds what each live worker that takes augment jobs published (`capabilities()`).
    """
    from workers.augment.catalog import METHODS, base_language, unsupported_reason

    settings = settings or get_settings()
    language = base_language(language)
    out = []
    for method in METHODS:
        entry: dict[str, Any] = {
            "method": method,
            "workers_ready": 0,
            "reason": None,
            "setting": None,
            "model": None,
            "note": None,
        }
        why_not = unsupported_reason(method, language, settings)
        if why_not:
            setting = {
                "mlm": "AUGLOOP_MLM_MODEL",
                "backtranslation": "AUGLOOP_BT_ROUTES",
                "paraphrase": "AUGLOOP_PARAPHRASE_LANGUAGES",
            }.get(method)
            out.append({**entry, "state": UNAVAILABLE, "available": False, "reason": why_not, "setting": setting})
            continue
        statuses = []
        for caps in worker_capabilities:
            status = caps.get(method)
            if not status:
                continue
            if method == "backtranslation" and status.get("routes") is not None:
                routes = [r for r in status["routes"] if base_language(str(r.get("source", ""))) == language]
                if routes:
                    status = min(routes, key=lambda r: _STATE_ORDER.get(r["state"], 2))
                else:  # this worker's settings differ from the API's: it has no route for the language
                    status = {
                        "state": UNAVAILABLE,
                        "setting": "AUGLOOP_BT_ROUTES",
                        "reason": f"a worker has no back-translation route from {language!r}; add one to "
                        "its AUGLOOP_BT_ROUTES",
                    }
            statuses.append(status)
        if not statuses:
            out.append(
                {
                    **entry,
                    "state": NO_WORKER,
                    "available": False,
                    "reason": "no worker that runs augment jobs is running; jobs wait in the queue until one "
                    "starts (`augloop worker`)",
                }
            )
            continue
        best = min(statuses, key=lambda s: _STATE_ORDER.get(s["state"], 2))
        out.append(
            {
                **entry,
                "state": best["state"],
                "available": best["state"] in (READY, DOWNLOAD),
                "workers_ready": sum(1 for s in statuses if s["state"] in (READY, DOWNLOAD)),
                "model": best.get("model"),
                "reason": best.get("reason"),
                "setting": best.get("setting"),
                "note": best.get("note") or best.get("source"),
            }
        )
    return out
