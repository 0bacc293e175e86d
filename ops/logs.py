"""The daemons' logs on standard error: JSON lines for a journal or a collector, readable lines on
a terminal.

Identifiers (``account``, ``service``, ``node``, ``position``, ``sync_id``...) are never
formatted into the message: call sites give them as ``extra={...}``, so that the message reads
alone ("sync finished") and logs can be filtered by key. Both formats carry every key: JSON as
fields of the object, text as ``key=value`` after the message.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator
from typing import TextIO

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}

#: The log's formats: ``auto`` is text on a terminal, JSON otherwise.
FORMATS = ("auto", "json", "text")


def extra_fields(record: logging.LogRecord) -> Iterator[tuple[str, object]]:
    """The keys a call site gave with ``extra={...}``, in the order given."""
    for key, value in vars(record).items():
        if key not in _STANDARD and not key.startswith("_"):
            yield key, value


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
        for key, value in extra_fields(record):
            data.setdefault(key, value)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


class TextFormatter(logging.Formatter):
    """Formats a record as ``time level logger message key=value...``, for a person."""

    def format(self, record: logging.LogRecord) -> str:
        """The record on one line (its traceback, if any, below)."""
        when = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = f"{when}.{int(record.msecs):03d} {record.levelname:<7} {record.name}: "
        line += record.getMessage()
        for key, value in extra_fields(record):
            line += f" {key}={_text_value(value)}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _text_value(value: object) -> str:
    # Quoted when a reader could not tell where it ends (a node name with a space or a quote).
    text = value if isinstance(value, str) else str(value)
    if text and not any(char.isspace() or char in "\"'=\\" for char in text):
        return text
    return json.dumps(text)


def formatter_for(log_format: str, stream: TextIO) -> logging.Formatter:
    """The formatter of ``log_format`` (``auto``: text when ``stream`` is a terminal)."""
    if log_format == "auto":
        log_format = "text" if _is_terminal(stream) else "json"
    return TextFormatter() if log_format == "text" else JsonFormatter()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed, or not a real file
        return False


def configure_logging(level: str = "INFO", log_format: str = "auto") -> None:
    """Send every logger's records at ``level`` and above to stderr, in ``log_format``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter_for(log_format, sys.stderr))
    handler.addFilter(_alembic_at_debug)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # slixmpp is chatty at INFO about every stream feature; keep its warnings.
    logging.getLogger("slixmpp").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("alembic").setLevel(logging.NOTSET)  # its INFO lines: see the filter


def _alembic_at_debug(record: logging.LogRecord) -> bool:
    """Alembic's INFO lines ("Context impl SQLiteImpl.", "Will assume transactional DDL.") are
    worth reading only when debugging: they pass as DEBUG lines, when the root logger is at
    DEBUG. (A handler's filter: a logger's would not see its children's records.)"""
    if record.levelno == logging.INFO and record.name.partition(".")[0] == "alembic":
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger().isEnabledFor(logging.DEBUG)
    return True


def quiet_libraries() -> None:
    """For one-shot commands: keep slixmpp's and Alembic's chatter off the terminal.

    A failure slixmpp logs ("No appropriate login method.") reaches the user as our own error
    line; printing both would say it twice. The daemons re-enable slixmpp's warnings.
    """
    logging.getLogger("slixmpp").setLevel(logging.CRITICAL)
    logging.getLogger("alembic").setLevel(logging.WARNING)
