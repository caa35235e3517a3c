"""Atomic writes: a reader (or a crash) never sees half a file, and the old file survives a failure.
Files written inside ``written_together()`` replace their old versions together, or none does."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from weakspot.errors import WeakspotError

TEMP_NAME_CHARS = 32  # of the target's name in a temp file's name, so that the temp name fits where the target's does


@dataclass
class _Group:
    written: list[tuple[Path, Path]] = field(default_factory=list)  # (temp file, its target)
    created: list[Path] = field(default_factory=list)  # folders made for the targets, outermost first


_GROUP: ContextVar[_Group | None] = ContextVar("weakspot_written_together", default=None)


def unwritable(target: str | os.PathLike, error: OSError) -> WeakspotError:
    """The one-line error for an output the OS refused: the file and the OS's reason."""
    return WeakspotError(f"{target}: cannot write there ({error.strerror or error})")


def append_json_line(path: str | os.PathLike, entry: dict[str, Any]) -> None:
    """Append one JSON line and fsync it (a log): a crash loses at most the line being written. Any OSError is
    the one-line error naming the file."""
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        raise unwritable(path, error) from None


def temp_prefix(target: Path) -> str:
    """The name prefix of a temp file or folder beside ``target`` (hidden, of bounded length)."""
    return f".{target.name[:TEMP_NAME_CHARS]}."


def _refuse_impossible(path: str | os.PathLike) -> Path:
    """The checks that need no write: ``path`` is not a folder, not under a file, its name not too long."""
    target = Path(path)
    try:
        parent = next((folder for folder in target.parents if folder.exists()), None)
        try:
            name_max = os.pathconf(parent or ".", "PC_NAME_MAX")
        except (OSError, ValueError):
            name_max = 255
        if len(os.fsencode(target.name)) > name_max:
            raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG))
        if target.is_dir():
            raise WeakspotError(f"{target}: is a directory; give a file path to write")
    except OSError as error:
        raise unwritable(target, error) from None
    if parent is not None and not parent.is_dir():
        raise WeakspotError(f"{target}: cannot be created, {parent} is a file")
    return target


def _make_parents(target: Path, created: list[Path]) -> None:
    """Create the missing folders above ``target``, appending each one made to ``created``."""
    for folder in reversed(target.parents):
        if not folder.exists():
            folder.mkdir()
            created.append(folder)


def _remove_folders(created: list[Path]) -> None:
    for folder in reversed(created):
        with suppress(OSError):
            folder.rmdir()


def check_output_file(path: str | os.PathLike) -> Path:
    """Refuse an output path that can never be written before any work is done, so a long run does not
    fail at its very end: a folder, a path under a file, a name too long, or a place where the OS refuses a
    new file (permissions, a read-only or pseudo filesystem). The probe makes the missing folders and a temp
    file as the write would, and removes them again."""
    target = _refuse_impossible(path)
    created: list[Path] = []
    try:
        _make_parents(target, created)
        fd, name = tempfile.mkstemp(prefix=temp_prefix(target), suffix=".tmp", dir=target.parent)
        os.close(fd)
        os.unlink(name)
    except OSError as error:
        raise unwritable(target, error) from None
    finally:
        _remove_folders(created)
    return target


def check_outputs(*paths: str | os.PathLike | None, inputs: Sequence[str | os.PathLike | None] = ()) -> list[Path]:
    """``check_output_file`` on each path given (None and "" are skipped), after refusing one that would
    overwrite an input file or land inside an input image folder (whose sub-folders are its classes)."""
    outputs = [Path(path) for path in paths if path]
    for given in filter(None, inputs):
        source = Path(given)
        if not source.exists():
            continue
        folder_of_classes = source.is_dir() and not (source / "labels.csv").exists()
        for output in outputs:
            try:  # a path the OS cannot even look up is no input: the probe below names its problem
                same = source.is_file() and output.exists() and os.path.samefile(output, source)
                inside = folder_of_classes and output.resolve().is_relative_to(source.resolve())
            except OSError:
                continue
            if same:
                raise WeakspotError(f"{output}: is also this command's input; writing it would replace it")
            if inside:
                raise WeakspotError(f"{output}: inside the image folder {source}, whose sub-folders are its classes; "
                                    "write it elsewhere")
    return [check_output_file(path) for path in outputs]


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], binary: bool = True) -> Path:
    """Call ``write(fileobj)`` on a temp file beside ``path``, fsync it, then rename it over ``path`` (inside
    ``written_together()``: when the block ends). Any OSError (no space, a read-only filesystem, a name too
    long) is a WeakspotError naming ``path``, and the temp file is removed."""
    target = _refuse_impossible(path)
    group = _GROUP.get()
    try:
        _make_parents(target, group.created if group is not None else [])
        fd, tmp_name = tempfile.mkstemp(prefix=temp_prefix(target), suffix=".tmp", dir=target.parent)
    except OSError as error:
        raise unwritable(target, error) from None
    try:
        with os.fdopen(fd, "wb" if binary else "w") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        if group is None:
            os.replace(tmp_name, target)
        else:
            group.written.append((Path(tmp_name), target))
    except BaseException as error:
        Path(tmp_name).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise unwritable(target, error) from None
        raise
    return target


@contextmanager
def written_together() -> Iterator[None]:
    """The files ``atomic_write`` writes inside this block replace their targets when it ends, all of them
    or (on an error before or while replacing) none: every target keeps its previous bytes, and the temp
    files and the folders made for them are removed. Inside another such block, it is part of that one."""
    if _GROUP.get() is not None:
        yield
        return
    group = _Group()
    token = _GROUP.set(group)
    try:
        yield
        _replace_all(group.written)
    except BaseException:
        for temp, _ in group.written:
            temp.unlink(missing_ok=True)
        _remove_folders(group.created)
        raise
    finally:
        _GROUP.reset(token)


def _replace_all(written: list[tuple[Path, Path]]) -> None:
    """Rename each temp file over its target; on a failure, put back what the renames before it replaced."""
    done: list[tuple[Path, Path | None]] = []  # (target, its previous version moved aside, or None)
    try:
        for temp, target in written:
            previous = temp.with_name(temp.name + ".old") if target.exists() else None  # a name nobody else takes
            if previous is not None:
                os.replace(target, previous)
            done.append((target, previous))
            os.replace(temp, target)
    except BaseException as error:  # Ctrl-C and SIGTERM too
        for placed, previous in reversed(done):
            with suppress(OSError):
                if previous is None:
                    placed.unlink(missing_ok=True)
                else:
                    os.replace(previous, placed)
        if isinstance(error, OSError):
            raise unwritable(target, error) from None
        raise
    for _, previous in done:
        if previous is not None:
            with suppress(OSError):
                previous.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda handle: handle.write(text), binary=False)


def atomic_write_json(path: str | os.PathLike, payload: Any) -> Path:
    return atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")
