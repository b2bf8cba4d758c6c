"""The report endpoint's tokens: each attempt of a trial gets its own, good for that attempt alone.

A study's key is random (:func:`new_key`) and kept with the study in its storage (the study's system
attribute ``hpo:report_key``), so every replica of the operator, a restarted one and ``hpo run`` share
it without any configuration. An attempt's token is the key's HMAC-SHA256 of the study's name, the
trial's number and the attempt; the trial process is given the token, never the key, so it can write
its own trial's current attempt and nothing else.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

# Where a study keeps its key (an Optuna study system attribute).
ATTR_REPORT_KEY = "hpo:report_key"


def new_key() -> str:
    return secrets.token_hex(32)


def trial_token(key: str, study: str, trial: int, attempt: int) -> str:
    message = f"{study}\n{trial}\n{attempt}".encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def token_matches(key: str, study: str, trial: int, attempt: int, token: str) -> bool:
    return hmac.compare_digest(trial_token(key, study, trial, attempt).encode(), token.encode())
