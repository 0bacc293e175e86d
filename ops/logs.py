"""Structured logs for the daemons: one JSON object per line on standard error.

Each line carries time, level, logger and message, plus any ``extra={...}`` fields given at the
call site (``position``, ``service``, ``node``, ``owner``...), so logs can be filtered by field.
"""

from __future__ import annotations

import json
import logging
import sys
import time

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as JSON, with its extra fields."""
        data: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                data[key] = value
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def configure_logging(level: str = "INFO") -> None:
    """Send every logger's records at ``level`` and above to stderr as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # slixmpp is chatty at INFO about every stream feature; keep its warnings.
    logging.getLogger("slixmpp").setLevel(max(logging.WARNING, root.level))
    # Alembic says "Context impl SQLiteImpl." at every start: worth reading only when debugging.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, root.level))


def quiet_libraries() -> None:
    """For one-shot commands: keep slixmpp's and Alembic's chatter off the terminal.

    A failure slixmpp logs ("No appropriate login method.") reaches the user as our own error
    line; printing both would say it twice. The daemons re-enable slixmpp's warnings.
    """
    logging.getLogger("slixmpp").setLevel(logging.CRITICAL)
    logging.getLogger("alembic").setLevel(logging.WARNING)
