"""Advisory file locks with the holder's pid and host written in the lock file.

``file_lock(path)`` takes an exclusive ``flock`` on ``path`` (created if absent) and writes
``{"pid", "host", "purpose", "since"}`` into it, so a waiter can say who holds the lock. The kernel releases
an ``flock`` when its holder dies, so a lock file left by a killed process (a *stale* lock) never blocks: the
next taker acquires it at once and overwrites the content. Where ``flock`` is unsupported (some network file
systems answer ``ENOLCK``), the lock falls back to an ``O_EXCL`` marker file whose holder is checked for
liveness (same host: ``kill(pid, 0)``); a marker of a dead holder is removed as stale.

Locks are advisory: every writer in this project takes them; other programs are not stopped.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from coala_core.errors import StoreError


class LockTimeoutError(StoreError):
    """The lock stayed held by another live process past the timeout."""


def holder_info(path: str | Path) -> dict:
    """What the lock file says about its (last) holder; {} if unreadable."""
    try:
        return json.loads(Path(path).read_text() or "{}")
    except (OSError, ValueError):
        return {}


def _describe(info: dict) -> str:
    if not info:
        return "another process"
    return f"pid {info.get('pid')} on {info.get('host')} ({info.get('purpose', '?')}, since {info.get('since', '?')})"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _content(purpose: str) -> bytes:
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "purpose": purpose,
                       "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}).encode()


@contextlib.contextmanager
def file_lock(path: str | Path, *, purpose: str = "write", timeout: float | None = None,
              poll: float = 0.05) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` for the block.

    ``timeout`` None waits for ever; otherwise :class:`LockTimeoutError` (naming the holder) after ``timeout``
    seconds; 0 tries once.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            _acquire_flock(fd, p, timeout, poll)
        except OSError as err:
            if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            os.close(fd)
            fd = -1
            with _marker_lock(p, purpose, timeout, poll):
                yield
            return
        with contextlib.suppress(OSError):  # the holder's name is a courtesy: a full disk must not stop the lock
            os.ftruncate(fd, 0)
            os.pwrite(fd, _content(purpose), 0)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        if fd >= 0:
            os.close(fd)


def _acquire_flock(fd: int, p: Path, timeout: float | None, poll: float) -> None:
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if deadline is not None and time.monotonic() >= deadline:
                raise LockTimeoutError(f"{p}: locked by {_describe(holder_info(p))}; waited {timeout:g} s") from None
            time.sleep(poll)


@contextlib.contextmanager
def _marker_lock(p: Path, purpose: str, timeout: float | None, poll: float) -> Iterator[None]:
    marker = p.with_name(p.name + ".held")
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            info = holder_info(marker)
            if info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int) and not pid_alive(info["pid"]):
                with contextlib.suppress(FileNotFoundError):
                    marker.unlink()  # stale: its holder died
                continue
            if deadline is not None and time.monotonic() >= deadline:
                raise LockTimeoutError(f"{p}: locked by {_describe(info)}; waited {timeout:g} s") from None
            time.sleep(poll)
    try:
        os.write(fd, _content(purpose))
        os.close(fd)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            marker.unlink()
