"""One settings object for every deployable (API, worker, UI, CLI), read from AUGLOOP_* variables or `.env`."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from core.errors import ValidationFailed


class Settings(BaseSettings):
    # Every number bounded and finite: AUGLOOP_JOB_LEASE_SECONDS=nan left a worker failing its claim every second
    # forever, and a port of 99999 failed deep in the server. A bad value stops the program at once, naming it.
    model_config = SettingsConfigDict(env_prefix="AUGLOOP_", env_file=".env", extra="ignore", allow_inf_nan=False)

    # Storage
    data_dir: Path = Path("var")
    database_url: str = ""  # empty: SQLite file under data_dir
    # SQLite reads a busy timeout past 2**31 - 1 ms as 0: no waiting at all
    sqlite_busy_timeout_ms: int = Field(default=30_000, ge=0, le=2**31 - 1)

    # API
    api_host: str = "127.0.0.1"  # never empty: uvicorn and Streamlit read "" as every interface
    api_port: int = Field(default=8000, ge=1, le=65535)
    api_url: str = "http://127.0.0.1:8000"  # where the UI and the CLI client reach the API
    cors_origins: list[str] = Field(default_factory=list)  # closed by default
    # any request body; a file imported now (POST .../import)
    max_request_bytes: int = Field(default=50 * 1024 * 1024, ge=1, le=2**40)
    # a file imported as a job (POST .../imports), streamed to disk
    max_upload_bytes: int = Field(default=16 * 1024**3, ge=1, le=2**50)
    # rows of one import: it streams, memory does not grow with the file
    max_upload_rows: int = Field(default=50_000_000, ge=1, le=10**12)
    max_text_chars: int = Field(default=20_000, ge=1, le=100_000_000)
    auth_failures_per_minute: int = Field(default=20, ge=1, le=1_000_000)
    # Addresses whose X-Forwarded-For is believed (the review UI's server, a reverse proxy); nobody's by default.
    trusted_proxies: list[str] = Field(default_factory=list)

    # Queue and workers
    job_lease_seconds: float = Field(default=60.0, gt=0, le=86400)  # 1e23 overflowed every claim
    # The lease of the jobs `augloop train` holds for its in-process runs: longer than a worker's, so that a
    # laptop's sleep or a Ctrl-Z does not end them; a command killed with SIGKILL has its runs ended this late.
    cli_job_lease_seconds: float = Field(default=300.0, gt=0, le=86400)
    job_max_attempts: int = Field(default=3, ge=1, le=1000)
    job_retry_base_seconds: float = Field(default=5.0, ge=0, le=86400)
    job_retry_max_seconds: float = Field(default=600.0, ge=0, le=86400)
    # A job that failed because the database was briefly unreachable, locked or cancelled its write for a
    # concurrent one (a restart, a failover) is retried without spending an attempt, this many times at most
    job_max_outages: int = Field(default=5, ge=0, le=1000)
    worker_poll_seconds: float = Field(default=1.0, gt=0, le=3600)
    worker_plugins: list[str] = Field(default_factory=list)  # modules that register extra job kinds
    # how often a worker refreshes its row in `workers`
    worker_presence_seconds: float = Field(default=15.0, gt=0, le=3600)
    # how often it checks again which augmenters it can load (a model put in the cache, an endpoint back up)
    worker_capabilities_seconds: float = Field(default=60.0, gt=0, le=86400)

    # UI
    ui_host: str = "127.0.0.1"
    ui_port: int = Field(default=8501, ge=1, le=65535)

    # Trainer
    trainer_default_encoder: str = ""  # empty: the recipe's default (bert-base-multilingual-cased)
    # CPU threads for training and prediction; 0: the cores this process may use
    trainer_threads: int = Field(default=0, ge=0, le=4096)
    # models (runs or ensembles) kept loaded per process for predict; 0 works as 1 (cached_predictor)
    trainer_model_cache: int = Field(default=2, ge=0, le=1000)
    trainer_predict_max_texts: int = Field(default=256, ge=1, le=1_000_000)  # texts per predict request
    # predict requests computing at once per API process (each runs a model on the API's CPU); one past them
    # waits up to 10 s for a turn, then gets 503 with Retry-After
    trainer_predict_concurrency: int = Field(default=2, ge=1, le=64)
    # Encoders a non-admin may train with: hub ids, or directories under this one (resolved: no `..` or
    # symlink out of it). None: <data_dir>/models.
    models_dir: Path | None = None
    # Transformer training runs queued or running per project at once (a run waiting for its learning-rate
    # selection counted; TF-IDF members not), for non-admins.
    max_training_jobs_per_project: int = Field(default=24, ge=1, le=1_000_000)  # an impact report queues arms × seeds
    # Candidates (sources × variants × methods) owed by augment jobs queued or running per project, for
    # non-admins: the queue is shared, so one project cannot put millions of candidates ahead of the others.
    max_augment_candidates_per_project: int = Field(default=1_000_000, ge=1, le=10**12)
    # The other jobs a member may queue (exports; a lead's pseudo-labels and label-model scoring) queued or
    # running per project at once, for non-admins: each reads the whole dataset (an export writes a file of it).
    max_other_jobs_per_project: int = Field(default=8, ge=1, le=1_000_000)
    # Export files kept per dataset, the newest (services/exporting.py): each is a copy of the dataset, and any
    # member may ask for one. An older one's download answers that it is gone.
    exports_kept_per_dataset: int = Field(default=10, ge=1, le=100_000)

    @property
    def resolved_models_dir(self) -> Path:
        return (self.models_dir or self.data_dir / "models").expanduser().resolve()

    # Review (db/reviews.py, services/review.py, services/review_bulk.py)
    review_page_size: int = Field(default=50, ge=1, le=1000)
    # the queue total counts this far past the page ("300+"); exact costs more
    review_count_ahead: int = Field(default=250, ge=0, le=1_000_000)
    # one synchronous bulk decision; ~1 s per 5,000 on SQLite
    review_bulk_max: int = Field(default=50_000, ge=1, le=10_000_000)

    # Augmentation (workers/augment). Model names are hub ids or local directories.
    mlm_model: str = "bert-base-multilingual-cased"
    # Languages the MLM covers ("*": any); empty: known models' coverage (workers/augment/catalog.py), else any.
    mlm_languages: list[str] = Field(default_factory=list)
    # Back-translation routes: source language → pivot and back, each leg a MarianMT-style model.
    bt_routes: list[dict[str, str]] = Field(
        default_factory=lambda: [
            {
                "source": "en",
                "pivot": "de",
                "forward": "Helsinki-NLP/opus-mt-en-de",
                "backward": "Helsinki-NLP/opus-mt-de-en",
            },
        ]
    )
    # "" picks cuda when available, else cpu; checked when read (a typo failed each augment job three times)
    augment_device: str = ""
    augment_dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"  # auto: bf16/fp16 on cuda, fp32 on cpu
    augment_torch_threads: int = Field(default=0, ge=0, le=1024)  # 0 keeps torch's default
    # token budget of one padded batch (rows × longest row)
    augment_batch_tokens: int = Field(default=8192, ge=1, le=10**9)
    nltk_data: Path | None = None  # WordNet + POS tagger (`make nltk-data`); None: <sys.prefix>/nltk_data
    # Semantic similarity of a variant to its source (workers/augment/encoder.py): a Hugging Face encoder.
    # Empty: the trainer's default encoder, else the offline all-MiniLM-L6-v2 package, else the recipe's.
    similarity_model: str = ""
    # Paraphrasing (workers/augment/paraphrase.py): an instruction-tuned causal LM through transformers
    # `generate` (hub id or local directory), or, when paraphrase_api_url is set, any OpenAI-compatible
    # chat-completions endpoint (vLLM, TGI, llama.cpp server...): base URL such as http://vllm:8000/v1.
    paraphrase_model: str = "Qwen/Qwen2.5-1.5B-Instruct"
    paraphrase_api_url: str = ""
    paraphrase_api_model: str = ""  # the served model's name; empty: paraphrase_model
    paraphrase_api_key: str = ""  # sent as a bearer token when set
    paraphrase_api_timeout: float = Field(default=120.0, gt=0)  # seconds per request
    paraphrase_api_concurrency: int = Field(default=8, ge=1, le=10_000)  # requests in flight at once
    paraphrase_languages: list[str] = Field(default_factory=lambda: ["*"])  # "*": any language

    @field_validator("api_host", "ui_host")
    @classmethod
    def _a_host(cls, value: str) -> str:
        # An empty AUGLOOP_API_HOST= line of a .env file opened the API on every network interface.
        if not value.strip():
            raise ValueError("an address to listen on (127.0.0.1 by default; 0.0.0.0 for every interface, on purpose)")
        return value.strip()

    @field_validator("augment_dtype", mode="before")
    @classmethod
    def _a_dtype(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value  # BFloat16 was taken, as torch names it

    @field_validator("models_dir", "nltk_data", mode="before")
    @classmethod
    def _empty_is_default(cls, value: object) -> object:
        # AUGLOOP_MODELS_DIR= made the current directory the encoders' root: empty means the default (None)
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("data_dir", mode="before")
    @classmethod
    def _a_data_dir(cls, value: object) -> object:
        # An empty AUGLOOP_DATA_DIR= line meant the current directory, wherever a command was started from.
        if isinstance(value, str) and not value.strip():
            raise ValueError("a directory (var by default); write . for the current one, on purpose")
        folder = Path(value).expanduser() if isinstance(value, str | Path) else None
        if folder is not None and folder.exists() and not folder.is_dir():
            raise ValueError(f"{value} is not a directory")  # a file there: creating the folder said "File exists"
        return value

    @field_validator("augment_device")
    @classmethod
    def _a_device(cls, value: str) -> str:
        if not re.fullmatch(r"|(cpu|cuda|mps|xpu|npu|hpu)(:\d{1,2})?", value.strip()):
            raise ValueError("cpu, cuda, cuda:N, mps or xpu (empty: cuda when available, else cpu)")
        return value.strip()

    @field_validator("database_url")
    @classmethod
    def _a_lasting_database(cls, value: str) -> str:
        # An in-memory SQLite database lives as long as one connection: an import "succeeded" into it and was
        # gone for the next command, and the API and a worker would each see a database of their own.
        if not value.strip():
            return value
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:  # a port that is not a number (a password holding '@' or ':') ended every command in a traceback
            url = make_url(value.strip())
        except (ArgumentError, ValueError) as err:
            raise ValueError(f"not a database URL augloop can use (SQLite or Postgres): {err}") from None
        database = url.database or ""
        if url.get_backend_name() == "sqlite" and (
            database in ("", ":memory:")
            or "mode=memory" in value
            or database.split("?", 1)[0] in ("file::memory:", "file::memory")
        ):  # sqlite:///file::memory:?uri=true too: a token "created" there was gone for the next command
            raise ValueError("an in-memory SQLite database is lost with its connection; name a file (sqlite:///path)")
        if url.get_backend_name() == "sqlite" and Path(database).is_dir():
            # SQLite said "unable to open database file", which every command reported as a database that did
            # not answer (and a worker waited a minute for)
            inside = Path(database) / "augloop.db"
            raise ValueError(f"{database} is a directory; name a database file in it (sqlite:///{inside})")
        return value

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'augloop.db').resolve()}"


# AUGLOOP_ variables that are not Settings fields: read where they are used, never misspellings.
OTHER_VARIABLES = frozenset({"AUGLOOP_CPU_BF16", "AUGLOOP_DB_PASSWORD", "AUGLOOP_SCREENSHOT_DIR"})


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """A warning per AUGLOOP_ variable of `environ` that names no setting (AUGLOOP_DATABASE_ULR was ignored in
    silence, and the command ran on the default database), with the setting it most resembles."""
    from difflib import get_close_matches

    names = [f"AUGLOOP_{name.upper()}" for name in Settings.model_fields]
    out = []
    for variable in sorted(environ):
        upper = variable.upper()  # pydantic-settings reads AUGLOOP_api_port as AUGLOOP_API_PORT
        if upper.startswith("AUGLOOP_") and upper not in names and upper not in OTHER_VARIABLES:
            near = get_close_matches(upper, names, n=1, cutoff=0.8)
            out.append(f"{variable} is not an augloop setting" + (f" (did you mean {near[0]}?)" if near else ""))
    return out


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings; a value out of bounds raises ValidationFailed naming its variable (AUGLOOP_...)."""
    try:
        settings = Settings()
        for warning in unknown_variables(os.environ):
            logging.getLogger("augloop.settings").warning("%s", warning)
        return settings
    except ValidationError as err:
        problems = "; ".join(
            f"AUGLOOP_{'_'.join(str(part) for part in e['loc']).upper()}: {e['msg'].removeprefix('Value error, ')}"
            f" (got {e.get('input')!r})"
            for e in err.errors()
        )
        raise ValidationFailed(f"settings: {problems}", field="settings") from None
    except SettingsError as err:  # a list or mapping setting that is not JSON (pydantic-settings parses those)
        found = re.search(r'field "(\w+)"', str(err))
        name = f"AUGLOOP_{found.group(1).upper()}" if found else "a list setting"
        raise ValidationFailed(
            f'settings: {name}: not a JSON list (e.g. ["a", "b"], or [] for none)', field="settings"
        ) from None
    except UnicodeDecodeError as err:  # .env in another encoding
        raise ValidationFailed(
            f"settings: .env is not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start})",
            field="settings",
        ) from None
