"""Keep storage URLs out of everything the operator writes: status, Events and logs.

Every URL the operator learns (its default storage, a study's Secret) is registered here. Text that
leaves the operator goes through :func:`redact`, and :func:`install_log_redaction` scrubs every log
record as it is created, so a database driver's error message that quotes its connection string is
masked in the logs as well. A registered URL is replaced whole; its password alone is replaced too (drivers
often print ``user:password@host``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote, urlsplit

URL_MASK = "<storage-url>"
PASSWORD_MASK = "***"

_lock = threading.Lock()
_secrets: dict[str, str] = {}  # text to hide → what to show instead


def register(url: str | None) -> None:
    """Remember a storage URL (and its password) so that it is redacted from now on."""
    if not url:
        return
    found = {url: URL_MASK}
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        password = None
    if password and len(password) >= 3:
        found[password] = PASSWORD_MASK
        found[unquote(password)] = PASSWORD_MASK
    with _lock:
        _secrets.update(found)


def secrets() -> Iterable[str]:
    with _lock:
        return list(_secrets)


def redact(value: Any) -> Any:
    """``value`` (text, or JSON-like data) with every registered secret masked."""
    with _lock:
        pairs = sorted(_secrets.items(), key=lambda kv: -len(kv[0]))  # whole URLs before passwords
    return _redact(value, pairs) if pairs else value


def _redact(value: Any, pairs: list[tuple[str, str]]) -> Any:
    if isinstance(value, str):
        for secret, mask in pairs:
            if secret in value:
                value = value.replace(secret, mask)
        return value
    if isinstance(value, dict):
        return {k: _redact(v, pairs) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_redact(v, pairs) for v in value)
    return value


def scrub(record: logging.LogRecord) -> None:
    """Mask registered secrets in a log record: its message (args merged in) and its traceback."""
    with _lock:
        pairs = sorted(_secrets.items(), key=lambda kv: -len(kv[0]))
    if not pairs:
        return
    try:
        message = record.getMessage()
    except Exception:  # a broken format string: the handler reports it
        return
    record.msg, record.args = _redact(message, pairs), None
    if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = _redact(record.exc_text, pairs)


_installed = False


def install_log_redaction() -> None:
    """Scrub every log record when it is created, whichever logger or handler it goes to.

    A record factory rather than a handler filter: records of kopf's per-object loggers, which kopf
    also posts as Kubernetes Events, pass through it too.
    """
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        scrub(record)
        return record

    logging.setLogRecordFactory(factory)
