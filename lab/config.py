"""Every setting of the lab, declared once: type, default, bounds and the sentence that documents it.

Environment variables are `LAB_` + the upper-case name (`LAB_MAX_SIZE=1G`). Only the drivers
(`lab` in lab/cli/commands.py, the app factory in app/main.py) read the environment, by calling
`Settings()`; the core is handed what it needs: `limits`, `lab.host.places.Places`/`Core`
(where files go), `lab.service.manager.ManagerConfig.from_settings` (docs/design.md#configuration).
docs/settings.md is checked against this class by tests/test_docs_settings.py, so a setting
cannot go undocumented, and a read of the environment below the drivers fails there too.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from lab.domain.limits import DEFAULT_LIMITS, Limits
from lab.domain.units import parse_size


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LAB_", extra="ignore")

    # -- where things live
    data_dir: Path = Field(Path("var"), description="where the SQLite history (and, by default, the image cache) lives")
    image_dir: Path | None = Field(None, description="the source-image cache (default: DATA_DIR/images)")
    runtime_dir: Path | None = Field(
        None, description="private directory for server sockets and logs (default: $TMPDIR/fastzero-lab-UID)")
    calibration_file: Path | None = Field(
        None, description="this machine's calibration (lab calibrate), shared by services on it (default: "
                          "DATA_DIR/calibration.json)")
    # -- limits on what a request (API or CLI) may ask for
    max_size: int = Field(DEFAULT_LIMITS.max_size, ge=1 << 20,
                          description="largest image a server may have (bytes or '1G')")
    max_delay_ms: float = Field(DEFAULT_LIMITS.max_delay_ms, ge=0, le=3_600_000,
                                description="largest per-request delay a server may have, in milliseconds")
    min_maxdata: int = Field(DEFAULT_LIMITS.min_maxdata, ge=512,
                             description="smallest maxdata (largest backend write) a server may have")
    max_maxdata: int = Field(DEFAULT_LIMITS.max_maxdata, ge=4096,
                             description="largest maxdata (largest backend write) a server may have")
    # -- the web service's queue and workers
    workers: int = Field(2, ge=1, le=32, description="runs carried out at once (worker threads)")
    queue_size: int = Field(64, ge=1, le=10_000, description="runs that may wait; beyond it POST answers 429")
    run_timeout_s: float = Field(600.0, gt=0, le=86_400,
                                 description="a run still going after this many seconds is stopped and marked failed")
    image_cache_bytes: int = Field(4 << 30, ge=0,
                                   description="the source-image cache is trimmed (least recently used) to this")
    max_servers: int = Field(8, ge=0, le=256, description="long-lived servers that may run at once")
    server_ttl_s: float = Field(
        3600.0, ge=0, le=30 * 86_400,
        description="a long-lived server is stopped this long after it started, unless it asked for its own ttl_s"
                    " (0: never)")
    max_queued_per_student: int = Field(
        4, ge=0, le=10_000, description="runs one student may have queued or running (0: no limit); beyond it 429")
    max_queued_anonymous: int = Field(
        32, ge=0, le=10_000,
        description="runs all callers without a student name (and without the token) may have queued or running "
                    "together (0: no limit); beyond it 429")
    external_targets: str = Field(
        "", description="NBD targets a server of kind external may use: Unix socket paths or host:port, "
                        "comma-separated (none by default: external servers are off)")
    audit_devices: str = Field(
        "", description="block devices the zero audit may overwrite (storage dev:/dev/X, with destructive), "
                        "comma-separated (none by default)")
    audit_paths: str = Field(
        "", description="existing directories an audit requested over the API may put its scratch disk in "
                        "(storage path:/dir), comma-separated; the CLI takes any directory (none by default)")
    token: SecretStr | None = Field(
        None, description='when set, POST and DELETE need "Authorization: Bearer <token>"; reads stay open')
    sse_keepalive_s: float = Field(
        15.0, gt=0, le=300, description="idle event streams get a comment line this often (proxies cut silent ones)")
    max_streams: int = Field(
        2000, ge=1, le=100_000,
        description="event streams (SSE) open at once; past it GET .../events answers 503 with Retry-After "
                    "(each holds a connection: the service raises its open-files limit to fit, or lowers this)")
    event_queue: int = Field(1000, ge=10, le=1_000_000,
                             description="events buffered per subscriber before it is resynced from the database")
    max_body_bytes: int = Field(64 * 1024, ge=1024, description="larger request bodies are refused (413)")
    allowed_hosts: str = Field(
        "", description="host names this service answers to (the Host header; comma-separated, `.example.org` for "
                        "a domain and its subdomains, `*` for any, only behind a proxy that checks Host) besides "
                        "localhost and IP addresses, which it always answers to; any other Host gets 400, so a "
                        "DNS-rebinding page cannot reach the API. Set it to the name students type, if not an address")
    allowed_origins: str = Field(
        "", description="other origins (comma-separated, such as https://lab.example.org) whose pages may POST/DELETE;"
                        " by default only the service's own origin (the Host it is reached at) may")
    progress_retention_h: float = Field(
        24.0, ge=0, le=24 * 3650, description="progress events of runs finished longer ago are deleted (0: keep all)")
    max_progress_events: int = Field(
        500_000, ge=0,
        description="at most this many progress events are kept, oldest finished runs' go first (0: no cap)")
    log_level: Literal["critical", "error", "warning", "info", "debug", "trace"] = Field(
        "info", description="the log level of `lab serve` (its own lines and uvicorn's)")
    log_format: Literal["text", "json"] = Field(
        "text", description="`lab serve`'s log lines: text, or json (one JSON object per line: ts, level, logger, "
                            "msg, and an event's fields such as event, run_id, who, student, status, reason)")
    log_health: bool = Field(
        False, description="log the access lines of health probes (GET /api/v1/health: the container's "
                           "healthcheck asks every 5 s); off: left out")
    auto_calibrate: bool | None = Field(
        None, description="calibrate this machine at the first `lab run`, or in the background at `lab serve`'s "
                          "first start (it answers meanwhile, health says starting): 1 always, 0 never; unset: "
                          "only on a terminal")
    # -- cluster mode (docs/design.md#cluster-mode)
    broker_url: SecretStr | None = Field(
        None, description="the Redis broker of cluster mode, with its password: redis://:PASSWORD@HOST:6379/0 or "
                          "redis+socket://:PASSWORD@/PATH/redis.sock; set on `lab serve`, the service sends "
                          "measurements to `lab worker`s; set on `lab worker`, where to take them from "
                          "(unset: everything runs in this process)")
    worker_name: str | None = Field(
        None, description="`lab worker`: this machine's name in the cluster, unique per worker (default: the host"
                          " name)")
    # -- for tests and bench only
    fault: str | None = Field(
        None, description="fault injection for the reliability tests: kill-after-commit or pause-at:PHASE")
    clients_in_process: bool = Field(
        False, description="run the re-enacted qemu eras in the service's process instead of a child (tests)")

    @field_validator("max_size", "image_cache_bytes", "max_body_bytes", "min_maxdata", "max_maxdata", mode="before")
    @classmethod
    def _size(cls, v: Any) -> Any:
        return parse_size(v) if isinstance(v, str) else v

    @field_validator("token", "fault", "auto_calibrate", "broker_url", "worker_name", mode="before")
    @classmethod
    def _empty_is_none(cls, v: Any) -> Any:
        return None if v is None or (isinstance(v, str) and not v.strip()) else v

    @property
    def limits(self) -> Limits:
        return Limits(max_size=self.max_size, max_delay_ms=self.max_delay_ms, min_maxdata=self.min_maxdata,
                      max_maxdata=self.max_maxdata,
                      external_targets=_items(self.external_targets), audit_devices=_items(self.audit_devices),
                      audit_paths=_items(self.audit_paths))

    @property
    def hosts(self) -> frozenset[str]:
        """LAB_ALLOWED_HOSTS as lower-case names without a trailing dot (a leading one kept: a domain)."""
        return frozenset(h.strip().lower().rstrip(".") for h in self.allowed_hosts.split(",") if h.strip())

    @property
    def origins(self) -> frozenset[str]:
        return frozenset(o.strip().rstrip("/").lower() for o in self.allowed_origins.split(",") if o.strip())

    @property
    def progress_retention_s(self) -> float | None:
        return self.progress_retention_h * 3600 if self.progress_retention_h > 0 else None

    @property
    def token_value(self) -> str | None:
        return self.token.get_secret_value() if self.token is not None else None

    @property
    def broker(self) -> str | None:
        """The broker URL (a secret: never logged as it is, lab.service.broker.redact)."""
        return self.broker_url.get_secret_value() if self.broker_url is not None else None

    @classmethod
    def defaults(cls) -> Settings:
        """The declared defaults, without reading the environment."""
        return cls.model_construct()


def _items(text: str) -> tuple[str, ...]:
    """A comma- (or space-) separated setting as its items."""
    return tuple(t for t in re.split(r"[,\s]+", text) if t)
