"""One settings object for every deployable (API, worker, UI, CLI), read from AUGLOOP_* variables or `.env`."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AUGLOOP_", env_file=".env", extra="ignore")

    # Storage
    data_dir: Path = Path("var")
    database_url: str = ""  # empty: SQLite file under data_dir
    sqlite_busy_timeout_ms: int = 30_000

    # API
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_url: str = "http://127.0.0.1:8000"  # where the UI and the CLI client reach the API
    cors_origins: list[str] = Field(default_factory=list)  # closed by default
    max_request_bytes: int = 50 * 1024 * 1024  # any request body; a file imported now (POST .../import)
    max_upload_bytes: int = 16 * 1024**3  # a file imported as a job (POST .../imports), streamed to disk
    max_upload_rows: int = 50_000_000  # rows of one import: it streams, memory does not grow with the file
    max_text_chars: int = 20_000
    auth_failures_per_minute: int = 20
    # Addresses whose X-Forwarded-For is believed (the review UI's server, a reverse proxy); nobody's by default.
    trusted_proxies: list[str] = Field(default_factory=list)

    # Queue and workers
    job_lease_seconds: float = 60.0
    job_max_attempts: int = 3
    job_retry_base_seconds: float = 5.0
    job_retry_max_seconds: float = 600.0
    worker_poll_seconds: float = 1.0
    worker_plugins: list[str] = Field(default_factory=list)  # modules that register extra job kinds
    worker_presence_seconds: float = 15.0  # how often a worker refreshes its row in `workers`

    # UI
    ui_host: str = "127.0.0.1"
    ui_port: int = 8501

    # Trainer
    trainer_default_encoder: str = ""  # empty: the recipe's default (bert-base-multilingual-cased)
    trainer_threads: int = 0  # CPU threads for training and prediction; 0: the cores this process may use
    trainer_model_cache: int = 2  # models (runs or ensembles) kept loaded per process for predict
    trainer_predict_max_texts: int = 256  # texts per predict request
    # Encoders a non-admin may train with: hub ids, or directories under this one (resolved: no `..` or
    # symlink out of it). None: <data_dir>/models.
    models_dir: Path | None = None
    # Training jobs (train, lr_select) queued or running per project at once, for non-admins.
    max_training_jobs_per_project: int = Field(default=24, ge=1)  # an impact report queues arms × seeds
    # Candidates (sources × variants × methods) owed by augment jobs queued or running per project, for
    # non-admins: the queue is shared, so one project cannot put millions of candidates ahead of the others.
    max_augment_candidates_per_project: int = Field(default=1_000_000, ge=1)

    @property
    def resolved_models_dir(self) -> Path:
        return (self.models_dir or self.data_dir / "models").expanduser().resolve()

    # Review (db/reviews.py, services/review.py)
    review_page_size: int = 50
    review_count_ahead: int = 250  # the queue total counts this far past the page ("300+"); exact costs more
    review_bulk_max: int = 50_000  # one synchronous bulk decision; ~1 s per 5,000 on SQLite

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
    augment_device: str = ""  # "" picks cuda when available, else cpu
    augment_dtype: str = "auto"  # auto: bfloat16/float16 on cuda, float32 on cpu
    augment_torch_threads: int = 0  # 0 keeps torch's default
    augment_batch_tokens: int = 8192  # token budget of one padded batch (rows × longest row)
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
    paraphrase_api_timeout: float = 120.0  # seconds per request
    paraphrase_api_concurrency: int = 8  # requests in flight at once
    paraphrase_languages: list[str] = Field(default_factory=lambda: ["*"])  # "*": any language

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'augloop.db').resolve()}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
