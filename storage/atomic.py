"""Atomic writes: write to a temporary sibling, fsync, then rename into place.

A crash leaves either the old file (or nothing) or the complete new file, never a partial one.

- Files and directories follow the user's umask (0644 / 0755 under the usual 022), like ``open`` and
  ``mkdir`` would make them; ``mkstemp``/``mkdtemp`` alone would leave them 0600 / 0700.
- :func:`atomic_dir` replaces an existing directory in **one** rename: on Linux ``renameat2(RENAME_EXCHANGE)``
  swaps the new and the old directory atomically, then the old one (now at the temporary name) is removed.
  Readers see the old directory or the new one, never none. Elsewhere it falls back to two renames.
- Temporary siblings carry the writer's pid (``.<name>.<pid>.<random>.tmp``); those of dead writers (a
  ``kill -9`` mid-write) are removed by the next write of the same target (:func:`clean_leftovers`).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from coala_core.errors import DiskFullError
from storage.locks import pid_alive

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (``/proc/self/status``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def disk_full(err: BaseException, target: str | Path, what: str = "writing") -> DiskFullError | None:
    """A one-line :class:`DiskFullError` for an ENOSPC/EDQUOT ``OSError`` while writing ``target``; else None."""
    if not isinstance(err, OSError) or err.errno not in DISK_FULL:
        return None
    try:
        free = shutil.disk_usage(Path(target).parent if not Path(target).is_dir() else target).free
        room = f"{free // 1024} KiB free"
    except OSError:
        room = "free space unknown"
    return DiskFullError(f"{target}: no space left on device while {what} ({room}); nothing was half-written: "
                         f"free some space and rerun the same command")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _prefix(final: Path) -> str:
    return f".{final.name}.{os.getpid()}."


def clean_leftovers(path: str | Path) -> list[Path]:
    """Remove temporary siblings of ``path`` left by writers that died (pid in the name no longer alive)."""
    final = Path(path)
    removed: list[Path] = []
    if not final.parent.is_dir():
        return removed
    pattern = re.compile(rf"^\.{re.escape(final.name)}\.(\d+)\.[^/]*\.tmp$")
    for entry in final.parent.iterdir():
        m = pattern.match(entry.name)
        legacy = entry.name == f".{final.name}.old"  # from the earlier two-rename atomic_dir
        if not (legacy or (m and not pid_alive(int(m.group(1))))):
            continue
        with contextlib.suppress(FileNotFoundError):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(final)
    fd, tmp_name = tempfile.mkstemp(prefix=_prefix(final), suffix=suffix + ".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, 0o666 & ~current_umask())
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    except OSError as err:
        if (full := disk_full(err, final)) is not None:
            raise full from None
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError, TypeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; on success it replaces ``path`` as a whole, in one rename."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(final)
    tmp = Path(tempfile.mkdtemp(prefix=_prefix(final), suffix=".tmp", dir=final.parent))
    try:
        os.chmod(tmp, 0o777 & ~current_umask())
        yield tmp
        if final.is_dir() and not final.is_symlink():
            if not _exchange(tmp, final):
                old = final.with_name(f"{_prefix(final)}old.tmp")
                os.replace(final, old)
                os.replace(tmp, final)
                tmp = old
        else:
            os.replace(tmp, final)
        _fsync_dir(final.parent)
    except OSError as err:
        if (full := disk_full(err, final)) is not None:
            raise full from None
        raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def atomic_write_files(directory: str | Path, files: Mapping[str, bytes]) -> Path:
    """Write ``{relative name: bytes}`` as the whole content of ``directory``, replacing it in one rename
    (a report directory: readers see the old report or the new one, never a mix)."""
    with atomic_dir(directory) as tmp:
        for name, data in files.items():
            target = tmp / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            with open(target, "rb") as fh:
                os.fsync(fh.fileno())
    return Path(directory)
