"""Safe file handling for runs: atomic writes of files and folders, permissions that follow the umask,
and an exclusive lock on a run folder."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

LOCK_FILE = ".genrl.lock"


def _umask() -> int:
    umask = os.umask(0)  # the only way to read it (os.umask sets it); restored at once
    os.umask(umask)
    return umask


def _default_mode() -> int:
    """The mode ``open()`` gives a new file under the current umask (mkstemp uses 0600 instead)."""
    return 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_write_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` (with normal permissions).

    A crash or an exception leaves ``path`` as it was and removes the temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _default_mode())  # mkstemp creates 0600 files
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _previous_version(target: Path) -> Path:
    return target.with_name(f".old-{target.name}")


def restore_interrupted_swap(target: str | os.PathLike) -> bool:
    """Put ``target`` back from its previous version when a crash inside :func:`swap_into_place`
    left only that (``.old-<name>`` without ``<name>``); returns whether it did, and logs it."""
    target = Path(target)
    old = _previous_version(target)
    if not old.is_dir() or target.exists():
        return False
    old.rename(target)
    logger.warning("restored %s from %s, left by a replacement that a crash interrupted", target, old.name)
    return True


def swap_into_place(complete: Path, target: Path) -> None:
    """Rename the finished folder ``complete`` to ``target``, replacing an existing ``target``.

    Whatever step a crash interrupts, ``target`` or its previous version (``.old-<name>``) exists;
    :func:`restore_interrupted_swap` (run here first, and by readers such as
    ``genrl.trainer.checkpoints.list_checkpoints``) puts the previous version back.
    """
    restore_interrupted_swap(target)
    if target.exists():
        old = _previous_version(target)
        shutil.rmtree(old, ignore_errors=True)  # left by an earlier crash after the second rename
        target.rename(old)
        complete.rename(target)
        shutil.rmtree(old)
    else:
        complete.rename(target)


def follow_umask(folder: str | os.PathLike) -> None:
    """Give ``folder`` and everything in it the permissions ``mkdir`` and ``open`` would under the umask.

    Writers that create private files (safetensors' ``save_file`` makes them 0600, ``mkdtemp`` 0700)
    would otherwise leave parts of a run unreadable to the group the umask shares it with.
    """
    umask = _umask()
    for path in [Path(folder), *Path(folder).rglob("*")]:
        if path.is_symlink():
            continue
        executable = path.is_dir() or path.stat().st_mode & 0o111
        os.chmod(path, (0o777 if executable else 0o666) & ~umask)


def replace_dir_atomically(target: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp_dir)`` and move the result to ``target`` only once it is complete.

    The folder and its files get the permissions the umask gives (:func:`follow_umask`).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".tmp-{target.name}-"))
    try:
        write(tmp)
        follow_umask(tmp)
        swap_into_place(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return target


class FolderLocked(RuntimeError):
    """Another live process holds the lock of a folder."""


class FolderLock:
    """An exclusive lock on a folder: ``<folder>/.genrl.lock``, holding the owner's pid and host.

    The lock is an ``fcntl.flock`` on that file, which the kernel drops however its owner ends
    (even on SIGKILL), so a lock file left by a dead process is taken over; the pid and host in it
    name the owner when the lock is refused. On a filesystem without file locks the pid alone
    decides: a live process of this host, or any process of another host, keeps the lock.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.path = Path(folder) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> str | None:
        """Take the lock; returns the previous (dead) owner when a stale lock file was taken over.

        Raises :class:`FolderLocked` naming the owner when a live process holds it.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                previous = self._lock(fd)
            except BaseException:
                os.close(fd)
                raise
            # the previous owner may have removed the file between our open and our lock: then we
            # hold a lock on an unlinked file that a third process would not see; start again
            if _same_file(fd, self.path):
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return previous or None

    def _lock(self, fd: int) -> str:
        """flock ``fd`` (or, without file locks, check the recorded owner); returns the recorded owner."""
        owner = os.pread(fd, 256, 0).decode(errors="replace").strip()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderLocked(self._held_by(owner)) from None
        except OSError as err:
            if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
            logger.warning("%s: the filesystem does not support file locks (%s); relying on the pid in it",
                           self.path, err.strerror)
            if owner and _owner_may_live(owner):
                raise FolderLocked(self._held_by(owner) + f"; if no run uses it, delete {self.path}") from None
        return owner

    def _held_by(self, owner: str) -> str:
        pid, _, host = owner.partition(" ")
        who = f"process {pid} on {host}" if pid and host else "another process"
        return f"{self.path.parent} is in use by {who} (lock file {self.path})"

    def release(self) -> None:
        """Remove the lock file and drop the lock (nothing if not held)."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.path)  # before unlocking, so no one takes a lock on a file about to vanish
        os.close(self._fd)
        self._fd = None

    def __del__(self) -> None:
        if self._fd is not None:  # an abandoned lock: the kernel would drop it at exit anyway
            os.close(self._fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _owner_may_live(owner: str) -> bool:
    """Whether the ``"pid host"`` owner of a lock file may still run (always, for another host)."""
    pid, _, host = owner.partition(" ")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True
