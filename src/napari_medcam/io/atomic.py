"""Files that appear whole or not at all, and never overwrite unless asked.

A file is written to a hidden temporary file beside the target, then renamed, with
the permissions a plain ``open()`` would give it (0666 less the umask, e.g. 0644).
Several files that belong together (a mask TIFF and its GeoJSON) are written by
`write_files`: all of them, or none. A process killed mid-write leaves its hidden
temporary file behind; `clean_stale_temps` removes such leftovers (every verb that
writes into a folder calls it first).
"""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path


def _new_temp(path: Path) -> Path:
    """Create an empty, new file beside ``path`` with the umask's normal permissions.

    `tempfile.mkstemp` makes owner-only (0600) files, and a rename keeps the mode:
    an exported mask would be unreadable to the rest of a lab. ``os.open`` with mode
    0666 lets the kernel apply the umask, as for any file a program creates.
    """
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}{path.suffix}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"cannot create a temporary file beside {path}")


def _check_targets(paths: Sequence[Path], overwrite: bool) -> None:
    for path in paths:
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists: pass overwrite=True (--overwrite) to replace it")
        if not path.parent.is_dir():
            raise ValueError(f"folder {path.parent} does not exist")


@contextmanager
def atomic_path(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only on success.

    An error or interrupt leaves no half-written file, and an existing file is
    kept unless ``overwrite``.
    """
    with atomic_paths([path], overwrite) as (tmp,):
        yield tmp


@contextmanager
def atomic_paths(paths: Sequence[str | Path], overwrite: bool = False) -> Iterator[list[Path]]:
    """Temporary paths beside ``paths``; on success all are moved into place, else none.

    Nothing is touched before every target has been checked (exists without
    ``overwrite``, missing folder). The renames come last; if one fails, the files
    already moved are taken back (a replaced file is restored from a hard link kept
    until the end), so the targets are left as they were.
    """
    targets = [Path(p) for p in paths]
    if len(set(targets)) != len(targets):
        raise ValueError(f"the same file is named twice: {[str(p) for p in targets]}")
    _check_targets(targets, overwrite)
    temps: list[Path] = []
    try:
        for path in targets:
            temps.append(_new_temp(path))
        yield list(temps)
        _commit(temps, targets)
    finally:
        for tmp in temps:
            if tmp.exists():
                tmp.unlink()


def _commit(temps: list[Path], targets: list[Path]) -> None:
    """Rename every temporary file onto its target: all of them, or none."""
    backups: list[Path | None] = []
    try:
        for path in targets:
            backup = None
            if path.exists():
                backup = path.parent / f".{path.name}.{secrets.token_hex(4)}.bak"
                try:
                    os.link(path, backup)
                except OSError:  # no hard links here: replaced files cannot be restored
                    backup = None
            backups.append(backup)
        done: list[int] = []
        try:
            for i, (tmp, path) in enumerate(zip(temps, targets)):
                os.replace(tmp, path)
                done.append(i)
        except BaseException:
            for i in reversed(done):  # take back what was moved already
                if backups[i] is not None:
                    os.replace(backups[i], targets[i])
                else:
                    targets[i].unlink(missing_ok=True)
            raise
    finally:
        for backup in backups:
            if backup is not None:
                backup.unlink(missing_ok=True)


def write_atomic(path: str | Path, write: Callable[[Path], None], overwrite: bool = False) -> Path:
    """Call ``write(tmp_path)`` and move the result to ``path`` atomically."""
    with atomic_path(path, overwrite) as tmp:
        write(tmp)
    return Path(path)


def write_files(
    writers: Mapping[str | Path, Callable[[Path], None]], overwrite: bool = False
) -> list[Path]:
    """Write files that belong together (``{path: write(tmp_path)}``): all, or none.

    Each writer writes its temporary file; only when all have succeeded are they
    renamed into place (see `atomic_paths`). Returns the paths, in order.
    """
    paths = [Path(p) for p in writers]
    with atomic_paths(paths, overwrite) as temps:
        for tmp, write in zip(temps, writers.values()):
            write(tmp)
    return paths


_TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.[0-9a-f]{8}(?P<ext>\.[^.]*)?$")

#: a temporary file untouched this long belongs to a write that died: writers keep
#: touching theirs (every tile written updates its modification time)
STALE_AFTER_S = 600.0


def is_temp_name(name: str) -> bool:
    """True for the names `_new_temp` and `_commit` give: ``.<target>.<8 hex><ext>``,
    where ext is the target's own suffix (a temporary file) or ``.bak`` (a backup)."""
    m = _TEMP_NAME.match(name)
    if m is None:
        return False
    ext = m["ext"] or ""
    return ext == ".bak" or ext == Path(m["target"]).suffix


def clean_stale_temps(folder: str | Path, older_than: float = STALE_AFTER_S) -> list[Path]:
    """Delete the hidden temporary files a killed write left in ``folder`` (not below it).

    Only files named as this module names them and untouched for ``older_than``
    seconds are removed, so a write still running in another process keeps its file.
    Returns what was removed; a folder that cannot be listed is left alone.
    """
    folder = Path(folder)
    now = time.time()
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if not is_temp_name(entry.name) or not entry.is_file(follow_symlinks=False):
            continue
        try:
            if now - entry.stat(follow_symlinks=False).st_mtime < older_than:
                continue
            os.unlink(entry.path)
        except OSError:
            continue
        removed.append(Path(entry.path))
    return removed
