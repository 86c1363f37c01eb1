"""Worker logs: one line per job event, as text for people or JSON lines for log pipelines.

Job events carry ``job_id``, ``plugin``, ``attempt``, ``status`` and
``duration_s`` as record attributes (``extra=``); the JSON format puts them in
fields of their own, the text format in the message.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

#: Record attributes that job events add, in the order JSON lines show them.
JOB_FIELDS = ("job_id", "plugin", "attempt", "status", "duration_s", "error")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message and the job fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in JOB_FIELDS:
            if hasattr(record, field):
                line[field] = getattr(record, field)
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure_logging(log_format: str, level: int) -> None:
    """Send dtq's logs to stderr in ``log_format`` (``text`` or ``json``) at ``level``.

    Raises:
        ValueError: an unknown format.
    """
    if log_format not in ("text", "json"):
        raise ValueError(f"log_format must be text or json, got {log_format!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
