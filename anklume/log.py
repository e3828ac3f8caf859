"""Logging: journal fields under systemd, plain `key=value` text otherwise.

Stable messages with key=value fields ("Reconcile done changes=0") are what tests and
operators grep for, so keep them stable.
"""

import logging
import os
import sys

_configured = False


class _KVFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None) or {}
        kv = " ".join(f"{k}={_quote(v)}" for k, v in fields.items())
        msg = record.getMessage()
        return f"{record.levelname.lower()}: {msg}{' ' + kv if kv else ''}"


def _quote(v: object) -> str:
    s = str(v)
    return f'"{s}"' if (" " in s or not s) else s


def _journal_handler() -> logging.Handler | None:
    # JOURNAL_STREAM is set by systemd for services whose stdout/stderr go to the journal.
    if not os.environ.get("JOURNAL_STREAM"):
        return None
    try:
        from systemd import journal  # python3-systemd in the image
    except ImportError:
        return None

    class _Journal(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            fields = {f"ANKLUME_{k.upper()}": str(v) for k, v in
                      (getattr(record, "fields", None) or {}).items()}
            journal.send(_KVFormatter().format(record), PRIORITY=_priority(record.levelno),
                         SYSLOG_IDENTIFIER="anklume", **fields)

    return _Journal()


def _priority(levelno: int) -> int:
    return 3 if levelno >= logging.ERROR else 4 if levelno >= logging.WARNING else \
        6 if levelno >= logging.INFO else 7


def setup(debug: bool = False) -> None:
    global _configured
    root = logging.getLogger("anklume")
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    if _configured:
        return
    handler = _journal_handler()
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_KVFormatter())
    root.addHandler(handler)
    root.propagate = False
    _configured = True


def get(name: str) -> logging.Logger:
    return logging.getLogger(f"anklume.{name}")


def event(logger: logging.Logger, msg: str, level: int = logging.INFO, **fields: object) -> None:
    """Log one stable message with structured fields."""
    logger.log(level, msg, extra={"fields": fields})
