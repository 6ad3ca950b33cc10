"""The service's log format: one JSON object per line on stderr, for `housestyle serve` and its worker processes."""

from __future__ import annotations

import json
import logging
import sys


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line; access-log records are JSON already and pass through as they are."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.name == "housestyle.access":
            return message
        line = {"ts": self.formatTime(record), "level": record.levelname, "logger": record.name, "message": message}
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line)


def configure_json_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # one line per upstream call would double the log and its CPU; the access log already times every request
    logging.getLogger("httpx").setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
