"""Reading the files a user names: only regular files are opened (a named pipe or a device would block the
read forever), and text is UTF-8 with or without a byte-order mark (a spreadsheet's "CSV UTF-8" export
starts with one)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from weakspot.errors import WeakspotError

TEXT_ENCODING = "utf-8-sig"


def _article(noun: str) -> str:
    return "an" if noun[:1].lower() in "aeiou" else "a"


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "named pipe"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "special file"


def regular_file(path: str | os.PathLike, what: str) -> Path:
    """``path`` when it is a regular file (symlinks followed), else an error naming it and what it is:
    missing, a folder, or a named pipe, device or socket, which opening could block on."""
    file_path = Path(path)
    try:
        mode = file_path.stat().st_mode
    except FileNotFoundError:
        raise WeakspotError(f"{file_path}: {what} not found") from None
    except OSError as error:
        raise WeakspotError(f"{file_path}: cannot read the {what} ({error.strerror or error})") from None
    if stat.S_ISDIR(mode):
        raise WeakspotError(f"{file_path}: is a directory, not {_article(what)} {what} file")
    if not stat.S_ISREG(mode):
        raise WeakspotError(f"{file_path}: is a {_kind(mode)}, not a regular file ({_article(what)} {what} must be one)")
    return file_path


def read_text(path: str | os.PathLike, what: str) -> str:
    """The text of a regular file (``regular_file``) as UTF-8, a leading byte-order mark dropped; line endings
    are kept as they are, so the text can go to ``csv`` as it is."""
    file_path = regular_file(path, what)
    try:
        with open(file_path, encoding=TEXT_ENCODING, newline="") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError) as error:
        raise WeakspotError(f"{file_path}: not a readable {what} ({error})") from None


def first_repeated(items: Iterable[str]) -> str | None:
    """The first item seen twice, in one pass."""
    seen: set[str] = set()
    for item in items:
        if item in seen:
            return item
        seen.add(item)
    return None


def listing(items: list[str], most: int = 20) -> str:
    """``items`` comma-joined, cut after ``most`` so that an error about a huge header stays one short line."""
    if len(items) <= most:
        return ", ".join(items)
    return f"{', '.join(items[:most])}, ... ({len(items)} in all)"
