"""``key=value,…`` strings (lm-eval's ``--model_args`` form) and kick's one reading of boolean text.

lm-eval's own ``simple_parse_args_string`` also converts values (``0.50`` → ``0.5``, ``true`` →
``True``); kick keeps the text as written where it names or hashes a setting, and converts later
with the key's own checker, so these functions stay with strings.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


class ArgsError(ValueError):
    """A ``key=value`` string or a boolean setting cannot be read; the message names it."""


def parse_kv(text: str | None, *, what: str = "model_args", strict: bool = True) -> dict[str, str]:
    """``"a=1,b=x"`` → ``{"a": "1", "b": "x"}`` (keys and values stripped, values kept as text).

    ``strict``: an item without ``=`` is an error naming ``what``; otherwise it is skipped. Empty
    items (``"a=1,"``) are always skipped.
    """
    out: dict[str, str] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        if "=" not in part:
            if strict:
                raise ArgsError(f"{what} item {part!r} is not key=value")
            continue
        key, value = part.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def format_value(value: Any) -> str:
    """Text of one value in a ``key=value`` string: booleans as ``true``/``false``."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def format_kv(args: Mapping[str, Any]) -> str:
    """``{"a": 1, "b": True, "c": None}`` → ``"a=1,b=true"`` (None values left out)."""
    return ",".join(f"{k}={format_value(v)}" for k, v in args.items() if v is not None)


def as_bool(value: Any, *, key: str = "value", default: bool | None = None) -> bool:
    """``True``/``False``, or text in :data:`TRUE_WORDS` / :data:`FALSE_WORDS` (any case, stripped).

    An empty or missing value gives ``default`` when one is set; anything else is an error naming
    ``key``, the value and what is accepted.
    """
    if isinstance(value, bool):
        return value
    if value is None or (isinstance(value, str) and not value.strip()):
        if default is not None:
            return default
    else:
        text = str(value).strip().lower()
        if text in TRUE_WORDS:
            return True
        if text in FALSE_WORDS:
            return False
    raise ArgsError(f"{key}={value!r}; accepted: {' | '.join(TRUE_WORDS)} or {' | '.join(FALSE_WORDS)}")


def is_true(value: Any) -> bool:
    """Lenient flag reading (environment variables): True only for text in :data:`TRUE_WORDS`."""
    return value if isinstance(value, bool) else str(value).strip().lower() in TRUE_WORDS
