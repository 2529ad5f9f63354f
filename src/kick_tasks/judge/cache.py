"""On-disk verdict cache so re-running a judged task re-judges nothing and interrupted runs resume.

One small JSON file per verdict under ``<root>/<key[:2]>/<key>.json``, written atomically
(temporary file + ``os.replace``), so a crash leaves either the old state or the full record.
The key is ``sha256(endpoint, judge model, prompt hash, answers hash)``; the prompt hash covers
the full rendered messages (template wording included) and the request settings. Only parsed
verdicts are stored, so an unreadable reply is asked again on the next run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from kick_common.atomic import write_json

log = logging.getLogger(__name__)


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def verdict_key(model: str, messages: list[dict], answers: list[str] | tuple[str, ...],
                settings: dict | None = None, endpoint: str = "") -> str:
    """Cache key of one judge request: (endpoint, judge model, prompt hash, answers hash).

    The endpoint (base URL without credentials) is part of it: two servers that serve a model
    under the same name may still be different models.
    """
    prompt_hash = sha256_json({"messages": messages, "settings": settings or {}})
    answers_hash = sha256_json(list(answers))
    return sha256_json([endpoint.rstrip("/"), model, prompt_hash, answers_hash])


class VerdictCache:
    """Directory of JSON verdict records; ``get`` returns ``None`` on a miss or a damaged record."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        path = self._path(key)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            log.warning("ignoring unreadable judge cache record %s: %s", path, err)
            return None

    def put(self, key: str, record: dict) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, record, ensure_ascii=False)

    def __len__(self) -> int:
        return sum(1 for _ in self.root.glob("??/*.json")) if self.root.exists() else 0
