"""Atomic writes: a reader (or a crash) never sees half a file, and the old file survives a failure."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from weakspot.errors import WeakspotError


def check_output_file(path: str | os.PathLike) -> Path:
    """Refuse an output path that can never be written (a folder, or under a file) before any work is
    done, so a long run does not fail at its very end."""
    target = Path(path)
    if target.is_dir():
        raise WeakspotError(f"{target}: is a directory; give a file path to write")
    parent = next((folder for folder in target.parents if folder.exists()), None)
    if parent is not None and not parent.is_dir():
        raise WeakspotError(f"{target}: cannot be created, {parent} is a file")
    return target


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], binary: bool = True) -> Path:
    """Call ``write(fileobj)`` on a temp file beside ``path``, fsync it, then rename it over ``path``."""
    target = check_output_file(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except PermissionError as error:
        raise WeakspotError(f"{target}: cannot write there ({error.strerror})") from None
    try:
        with os.fdopen(fd, "wb" if binary else "w") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return target


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda handle: handle.write(text), binary=False)


def atomic_write_json(path: str | os.PathLike, payload: Any) -> Path:
    return atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")
