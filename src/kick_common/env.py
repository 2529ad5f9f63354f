"""kick's environment variables in one table, checked together before any weight loads (they are inputs too).

Each reader returns the typed value or raises :class:`EnvError` naming the variable, its value and what
is accepted. Secrets (the judge's API key) are checked for presence only and never appear in a message.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from kick_common.args import ArgsError, accepted_bools, as_bool, as_number

log = logging.getLogger(__name__)


class EnvError(ValueError):
    """An environment variable has a value kick cannot use; the message names it, the value and what is accepted."""


def _fail(name: str, value: str, accepted: str) -> EnvError:
    return EnvError(f"kick: invalid environment variable {name}={value!r}; accepted: {accepted}")


def _ranged(kind: type, low: float, accepted: str) -> Callable[[str, str], Any]:
    def read(name: str, text: str) -> Any:
        value = as_number(text, kind)
        if value is None or value < low:
            raise _fail(name, text, accepted)
        return value

    return read


def _lock_timeout(name: str, text: str) -> float:
    value = as_number(text, float)
    if value is None or not (value >= 0 or value == -1):
        raise _fail(name, text, "seconds >= 0, or -1 to wait forever")
    return value


def _switch(name: str, text: str) -> bool:
    try:
        return as_bool(text, key=name, lenient=True)
    except ArgsError:
        raise _fail(name, text, accepted_bools(lenient=True)) from None


def _http_url(name: str, text: str) -> str:
    text = str(text)  # task metadata (the judge's) may hold a non-text value
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        shown = f"{parts.scheme}://{parts.hostname or ''}…" if parts.scheme else text.split("@")[-1]
        raise EnvError(f"kick: invalid environment variable {name}={shown!r}; accepted: an http:// or https:// URL "
                       "with a host, e.g. http://localhost:8000/v1")
    return text.strip()


def _folder(name: str, text: str) -> str:
    path = os.path.expanduser(str(text))
    if os.path.exists(path) and not os.path.isdir(path):
        raise _fail(name, text, "a folder (it is created when missing), not a file")
    return text


def _choice(*choices: str) -> Callable[[str, str], str]:
    def read(name: str, text: str) -> str:
        if text.strip() not in choices:
            raise _fail(name, text, " | ".join(choices))
        return text.strip()

    return read


def _any_text(name: str, text: str) -> str:
    return text


@dataclass(frozen=True)
class EnvVar:
    """One environment variable kick reads: its reader, what it accepts, and whether its value is a secret."""

    name: str
    read: Callable[[str, str], Any]
    accepted: str
    secret: bool = False


VARIABLES = (
    EnvVar("KICK_CACHE_DIR", _folder, "a folder: the root of kick's caches (default ~/.cache/kick)"),
    EnvVar("KICK_CACHE_LOCK_TIMEOUT", _lock_timeout, "seconds >= 0, or -1 to wait forever (default -1)"),
    EnvVar("KICK_JUDGE_MODEL", _any_text, "the judge model's name as its endpoint serves it"),
    EnvVar("KICK_JUDGE_BASE_URL", _http_url, "an http:// or https:// URL with a host"),
    EnvVar("KICK_JUDGE_API_KEY", _any_text, "the judge endpoint's key (never logged or recorded)", secret=True),
    EnvVar("KICK_JUDGE_DISABLE", _switch, accepted_bools(lenient=True)),
    EnvVar("KICK_JUDGE_CACHE", _switch, accepted_bools(lenient=True)),
    EnvVar("KICK_JUDGE_CACHE_DIR", _folder, "a folder for remembered verdicts"),
    EnvVar("KICK_JUDGE_CONCURRENCY", _ranged(int, 1, "an integer >= 1"), "an integer >= 1"),
    EnvVar("KICK_JUDGE_TIMEOUT", _ranged(float, 1e-9, "seconds > 0"), "seconds > 0"),
    EnvVar("KICK_JUDGE_MAX_RETRIES", _ranged(int, 0, "an integer >= 0"), "an integer >= 0"),
    EnvVar("KICK_JUDGE_BACKOFF", _ranged(float, 0, "seconds >= 0"), "seconds >= 0"),
    EnvVar("KICK_JUDGE_MAX_TOKENS", _ranged(int, 1, "an integer >= 1"), "an integer >= 1"),
    EnvVar("KICK_ICRQA_SOURCE", _choice("hub", "mini"), "hub | mini"),
)
BY_NAME = {v.name: v for v in VARIABLES}


def read_env(name: str, env: Mapping[str, str] | None = None) -> Any:
    """The typed value of one of kick's variables, or None when it is unset or empty."""
    env = os.environ if env is None else env
    text = env.get(name)
    if text is None or not text.strip():
        return None
    return BY_NAME[name].read(name, text)


def check_environment(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Read every kick variable that is set (raising on the first bad one); warn once about ``KICK_*``
    names kick does not know (a typo would otherwise be ignored without a word). Returns name → value."""
    env = os.environ if env is None else env
    values = {var.name: read_env(var.name, env) for var in VARIABLES}
    unknown = sorted(n for n in env if n.startswith("KICK_") and n not in BY_NAME)
    if unknown:
        log.warning("kick: environment variable(s) %s are not kick settings and are ignored; kick reads %s",
                    ", ".join(unknown), ", ".join(BY_NAME))
    return {k: v for k, v in values.items() if v is not None}


def judge_is_configured(values: Mapping[str, Any]) -> bool:
    """A judge is set (``KICK_JUDGE_MODEL``) and not switched off (``KICK_JUDGE_DISABLE``)."""
    return bool(values.get("KICK_JUDGE_MODEL")) and not values.get("KICK_JUDGE_DISABLE", False)


def endpoint_answers(url: str, timeout_s: float = 2.0) -> str | None:
    """None when a TCP connection to ``url``'s host and port opens within ``timeout_s``; else the reason.
    Sends nothing (no key, no request): a cheap "is anything listening" probe."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout_s):
            return None
    except OSError as err:
        return f"{type(err).__name__}: {err.strerror or err}"


OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


def hub_reachable(timeout_s: float = 3.0, env: Mapping[str, str] | None = None) -> bool:
    """False when an offline switch is set or the Hugging Face Hub (``$HF_ENDPOINT``) does not answer quickly."""
    from kick_common.args import is_true

    env = os.environ if env is None else env
    if any(is_true(env.get(var, "")) for var in OFFLINE_VARS):
        return False
    return endpoint_answers(env.get("HF_ENDPOINT") or "https://huggingface.co", timeout_s) is None
