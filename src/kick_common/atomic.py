"""Crash-safe writes: a file or a whole folder appears complete or not at all (temporary sibling + rename)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (a rename inside it) to disk; silently skipped where unsupported."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_text(path: str | os.PathLike, text: str, *, fsync: bool = False) -> None:
    """Write ``text`` to a temporary sibling of ``path`` and rename it into place (``fsync``: flush first)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a temporary sibling of ``path`` (creating its folder) and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_json(path: str | os.PathLike, data: Any, *, fsync: bool = False, **dumps: Any) -> None:
    """:func:`write_text` of ``json.dumps(data, **dumps)`` (``default=str`` unless given)."""
    dumps.setdefault("default", str)
    write_text(path, json.dumps(data, **dumps), fsync=fsync)


def publish_dir(tmp: Path, dest: Path) -> None:
    """Rename the finished folder ``tmp`` to ``dest``; an existing ``dest`` (folder, file or symlink) is
    moved aside first (a rename cannot replace a non-empty folder) and deleted afterwards."""
    if os.path.lexists(dest):
        trash = dest.parent / f".trash-{dest.name}-{uuid.uuid4().hex}"
        os.rename(dest, trash)
        os.rename(tmp, dest)
        # a file or a symlink in dest's place goes itself; a symlink's target is never followed
        if trash.is_dir() and not trash.is_symlink():
            shutil.rmtree(trash, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                trash.unlink()
    else:
        os.rename(tmp, dest)


@contextlib.contextmanager
def staged_dir(dest: str | os.PathLike, *, fsync: bool = False) -> Iterator[Path]:
    """A fresh temporary folder ``.tmp-<name>-<uuid>`` beside ``dest``; when the block ends normally it
    replaces ``dest`` (:func:`publish_dir`), and it is removed whatever happens."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".tmp-{dest.name}-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        yield tmp
        if fsync:
            fsync_dir(tmp)
        publish_dir(tmp, dest)
        if fsync:
            fsync_dir(dest.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
