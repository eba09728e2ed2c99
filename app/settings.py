"""Every knob of the web service, in one place (environment variables prefixed LAB_).

LAB_DATA_DIR      where the SQLite history (and, unless LAB_IMAGE_DIR says otherwise, the image cache) lives
LAB_WORKERS       runs carried out at once (worker threads)
LAB_QUEUE_SIZE    runs that may wait; beyond it POST answers 429
LAB_MAX_SIZE      largest image a request may ask for (bytes or "1G")
LAB_MAX_DELAY_MS  largest per-request delay a request may ask for
LAB_RUN_TIMEOUT_S a run still going after this is stopped and marked failed
LAB_IMAGE_CACHE_BYTES  the source-image cache is trimmed (least recently used) to this
LAB_MAX_SERVERS   long-lived servers that may run at once
LAB_SERVER_TTL_S  a long-lived server is stopped this long after it started, unless it asked for its own ttl_s
                  (0: never)
LAB_MAX_QUEUED_PER_STUDENT  runs one student may have queued or running (0: no limit); beyond it 429
LAB_TOKEN         when set, POST/DELETE need "Authorization: Bearer <token>"
LAB_SSE_KEEPALIVE_S    idle event streams get a comment line this often (proxies cut silent ones)
LAB_EVENT_QUEUE   events buffered per subscriber before it is resynced from the database
LAB_MAX_BODY_BYTES     larger request bodies are refused (413)
LAB_ALLOWED_ORIGINS    other origins (comma-separated, such as https://lab.example.org) whose pages may POST/DELETE;
                       by default only the service's own origin (the Host it is reached at) may
LAB_PROGRESS_RETENTION_H  progress events of runs finished longer ago are deleted (0: keep them all)
LAB_MAX_PROGRESS_EVENTS   at most this many progress events are kept (oldest finished runs' go first; 0: no cap)
(LAB_RUNTIME_DIR, for private sockets, LAB_IMAGE_DIR, and LAB_EXTERNAL_TARGETS, the NBD targets a server of
kind external may use (Unix socket paths or host:port, comma-separated; none by default), are read by the
lab core itself.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from lab.spec import Limits
from lab.units import parse_size


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LAB_", extra="ignore")

    data_dir: Path = Path("var")
    workers: int = Field(2, ge=1, le=32)
    queue_size: int = Field(64, ge=1, le=10_000)
    max_size: int = Field(1 << 30, ge=1 << 20)
    max_delay_ms: float = Field(1000.0, ge=0, le=3_600_000)
    run_timeout_s: float = Field(600.0, gt=0, le=86_400)
    image_cache_bytes: int = Field(4 << 30, ge=0)
    max_servers: int = Field(8, ge=0, le=256)
    server_ttl_s: float = Field(3600.0, ge=0, le=30 * 86_400)
    max_queued_per_student: int = Field(4, ge=0, le=10_000)
    token: SecretStr | None = None
    sse_keepalive_s: float = Field(15.0, gt=0, le=300)
    event_queue: int = Field(1000, ge=10, le=1_000_000)
    max_body_bytes: int = Field(64 * 1024, ge=1024)
    allowed_origins: str = ""
    progress_retention_h: float = Field(24.0, ge=0, le=24 * 3650)
    max_progress_events: int = Field(500_000, ge=0)

    @field_validator("max_size", "image_cache_bytes", "max_body_bytes", mode="before")
    @classmethod
    def _size(cls, v: Any) -> Any:
        return parse_size(v) if isinstance(v, str) else v

    @field_validator("token", mode="before")
    @classmethod
    def _empty_token_is_none(cls, v: Any) -> Any:
        return None if v is None or (isinstance(v, str) and not v.strip()) else v

    @property
    def origins(self) -> frozenset[str]:
        return frozenset(o.strip().rstrip("/").lower() for o in self.allowed_origins.split(",") if o.strip())

    @property
    def limits(self) -> Limits:
        return Limits(max_size=self.max_size, max_delay_ms=self.max_delay_ms)

    @property
    def progress_retention_s(self) -> float | None:
        return self.progress_retention_h * 3600 if self.progress_retention_h > 0 else None

    @property
    def token_value(self) -> str | None:
        return self.token.get_secret_value() if self.token is not None else None
