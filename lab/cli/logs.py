"""`lab serve`'s logging: one configuration for its own lines (lab.*, app.*) and uvicorn's, as text or as
JSON lines (LAB_LOG_FORMAT=json), without the health probes' access lines unless LAB_LOG_HEALTH=1 (the
container's healthcheck asks every 5 s: ~700 lines an hour of nothing)."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

HEALTH_PATHS = frozenset({"/api/v1/health", "/api/health"})
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "color_message"}


def _access_fields(record: logging.LogRecord) -> dict[str, Any]:
    """uvicorn's access line as fields: its args are (client, method, path, http version, status)."""
    args = record.args if isinstance(record.args, tuple) else ()
    if len(args) == 5:
        client, method, path, version, status = args
        return {"event": "http", "client": client, "method": method, "path": path, "http": version, "status": status}
    return {}


class JsonLines(logging.Formatter):
    """One JSON object per line: ts (UTC, ISO 8601), level, logger, msg, and the record's own fields
    (`extra=`: event, run_id, who, ...)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage()}
        if record.name == "uvicorn.access":
            out.update(_access_fields(record))
        out.update({k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class DropHealth(logging.Filter):
    """Leaves out the access lines of GET /api/v1/health (the healthcheck's probes)."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = _access_fields(record)
        return not (fields and str(fields["path"]).split("?", 1)[0] in HEALTH_PATHS)


def log_config(level: str, fmt: str = "text", health: bool = False) -> dict[str, Any]:
    """A logging.config.dictConfig for `lab serve` (uvicorn's log_config)."""
    level = level.upper() if level != "trace" else "DEBUG"
    formatter = {"()": "lab.cli.logs.JsonLines"} if fmt == "json" else {
        "format": "%(asctime)s %(levelname)s %(name)s: %(message)s", "datefmt": "%Y-%m-%d %H:%M:%S"}
    access: dict[str, Any] = {"class": "logging.StreamHandler", "formatter": "lines", "stream": "ext://sys.stdout"}
    if not health:
        access["filters"] = ["no_health"]
    ours = {"handlers": ["lines"], "level": level, "propagate": False}
    return {
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"lines": formatter},
        "filters": {"no_health": {"()": "lab.cli.logs.DropHealth"}},
        "handlers": {"lines": {"class": "logging.StreamHandler", "formatter": "lines", "stream": "ext://sys.stderr"},
                     "access": access},
        "loggers": {"uvicorn": ours, "uvicorn.error": {"level": level},
                    "uvicorn.access": {"handlers": ["access"], "level": level, "propagate": False},
                    "lab": ours, "app": ours},
    }
