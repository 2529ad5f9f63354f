"""``key=value,…`` strings (lm-eval's ``--model_args`` form) and kick's one reading of boolean text.

lm-eval's own ``simple_parse_args_string`` also converts values (``0.50`` → ``0.5``, ``true`` →
``True``); kick keeps the text as written where it names or hashes a setting, and converts later
with the key's own checker, so these functions stay with strings.
"""

from __future__ import annotations

import math
import re
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


def as_bool(value: Any, *, key: str = "value", lenient: bool = False, default: bool | None = None) -> bool:
    """kick's one reading of a boolean setting.

    ``True``/``False`` or the text ``true``/``false`` (any case). ``lenient`` (environment switches,
    as Hugging Face reads its own) also takes ``1/0``, ``yes/no``, ``on/off``. An empty or missing
    value gives ``default`` when one is set; anything else is an :class:`ArgsError` naming ``key``,
    the value and what is accepted.
    """
    if isinstance(value, bool):
        return value
    if lenient and isinstance(value, int):
        value = str(value)
    if value is None or (isinstance(value, str) and not value.strip()):
        if default is not None:
            return default
    elif isinstance(value, str):
        text = value.strip().lower()
        true, false = (TRUE_WORDS, FALSE_WORDS) if lenient else (("true",), ("false",))
        if text in true:
            return True
        if text in false:
            return False
    raise ArgsError(f"{key}={value!r}; accepted: {accepted_bools(lenient)}")


def accepted_bools(lenient: bool = False) -> str:
    """What :func:`as_bool` accepts, for error messages."""
    return f"{' | '.join(TRUE_WORDS)} or {' | '.join(FALSE_WORDS)}" if lenient else "true or false"


def is_true(value: Any) -> bool:
    """Lenient and never failing, for variables kick does not own (``HF_HUB_OFFLINE``): True only for
    ``True`` or text in :data:`TRUE_WORDS`."""
    return value if isinstance(value, bool) else str(value).strip().lower() in TRUE_WORDS


def as_number(value: Any, kind: type = float) -> float | int | None:
    """kick's one reading of a number setting: ``value`` (text, int or float) as ``kind`` (``float`` or ``int``),
    or None when it is not one. Booleans, NaN and infinities are not numbers here; an ``int`` may be written
    ``4``, ``"4"`` or ``4.0``. Range checks stay with each setting (their messages say what is accepted)."""
    if isinstance(value, bool) or value is None:
        return None
    if kind is int:
        if isinstance(value, int):
            return value
        if isinstance(value, float):
            return int(value) if value.is_integer() else None
        return int(value) if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value) else None
    try:
        out = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None
