"""The compress-or-load sequence every cache caller runs, for tests that drive the cache directly."""

from __future__ import annotations

from typing import Any, Callable, Mapping

from kick_models import cache


def load_or_compress(model, parts: Mapping[str, Any], compress: Callable[[], Mapping[str, Any]],
                     **slot_args: Any) -> tuple[dict[str, Any], bool]:
    """Ask the cache for ``parts``' entry; on a miss run ``compress()`` (in place) and store. Returns (summary, hit)."""
    with cache.open_slot(model, parts, **slot_args) as slot:
        summary = slot.load()
        if summary is not None:
            return summary, True
        return slot.store(compress()), False
