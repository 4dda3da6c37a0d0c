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
    max_request_bytes: int = 50 * 1024 * 1024
    max_upload_rows: int = 500_000
    max_text_chars: int = 20_000
    auth_failures_per_minute: int = 20

    # Queue and workers
    job_lease_seconds: float = 60.0
    job_max_attempts: int = 3
    job_retry_base_seconds: float = 5.0
    job_retry_max_seconds: float = 600.0
    worker_poll_seconds: float = 1.0
    worker_plugins: list[str] = Field(default_factory=list)  # modules that register extra job kinds

    # UI
    ui_port: int = 8501

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'augloop.db').resolve()}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
