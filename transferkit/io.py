"""Atomic file writes and the on-disk cache location.

Every result, checkpoint and cache file is written to a temporary file in the same
directory and moved into place with :func:`os.replace`, so an interrupted run never
leaves a half-written file where a finished one is expected.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import functools
import glob
import json
import math
import os
import re
import shutil
import stat
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from .errors import TransferkitError, check, warn

#: the files a class-description matrix option may name (zeroshot.read_matrix), whose contents a job digest holds
MATRIX_FILES = (".npy", ".csv", ".txt")

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
try:
    import msvcrt
except ImportError:  # not Windows
    msvcrt = None

_UMASK = os.umask(0)
os.umask(_UMASK)


#: Windows: file names refuse ``:`` and other characters, and ``os.kill(pid, 0)`` sends CTRL_C_EVENT
WINDOWS = os.name == "nt"


#: age after which a temporary file of an atomic write belongs to a killed writer
STALE_TMP_S = 3600


#: errno values of a storage that takes no more (a full disk or quota, a file-size limit, a read-only file
#: system): every later write fails alike
STORAGE_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)


def _writing(e: OSError, path: Path, in_folder: bool = False) -> OSError:
    """``e`` named by the file :func:`atomic_path` was asked to write (see :func:`failed_writing`):
    ``[Errno 28] No space left on device while writing: 'r.json'``, or, where no temporary file
    could be made (``in_folder``), ``... while writing 'r.json' in the folder: 'runs/x'``."""
    if in_folder:
        return type(e)(e.errno, f"{e.strerror} while writing {path.name!r} in the folder", str(path.parent))
    return type(e)(e.errno, f"{e.strerror} while writing", str(path))


def make_dir(path: Path, lead: str, fix: str) -> None:
    """Make folder ``path`` and its parents, or a :class:`TransferkitError` ``"{lead} {path} (why); {fix}"``:
    why is an ancestor that is a file, or the file system's reason (which alone names no setting)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        there = next((p for p in (path, *path.parents) if p.exists()), None)
        why = f"{there} is a file, not a directory" if there is not None and not there.is_dir() else (
            f"{e.strerror or e}{f': {e.filename}' if e.filename and str(e.filename) != str(path) else ''}")
        raise TransferkitError(f"{lead} {path} ({why}); {fix}") from e


def remove_inside(path: str | os.PathLike, top: str | os.PathLike) -> None:
    """Remove the file or folder ``path`` of the run (or benchmark) directory ``top`` (a missing
    one: nothing; a folder as ``shutil.rmtree(ignore_errors=True)``), unless one of its folders is
    a symbolic link that leads out of ``top``: removing through it would delete files elsewhere
    (``rmtree`` refuses a link itself, not a linked folder above), so ``path`` is left in place with
    a warning naming the link (once per link in a run or benchmark: :func:`links_warned_once`). A link at
    ``path`` itself (to a file or a folder) is unlinked, never what it leads to: what must go (a
    changed source network's checkpoints) is gone from the run, which starts a folder of its own there."""
    path, top = Path(path), Path(top)
    if not os.path.lexists(path):
        return
    if not resolves_inside(path.parent, top):
        link = next((p for p in path.parents if p.is_symlink()), path.parent)
        if link not in _warned_links():  # once per link in a run: a resume passes it for every finished job
            _warned_links().add(link)
            warn(f"{path} is left in place: {link} is a symbolic link to {link.resolve()}, outside {top}, and "
                 f"transferkit removes nothing outside the run (or benchmark) directory")
        return
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def resolves_inside(path: str | os.PathLike, top: str | os.PathLike) -> bool:
    """Whether ``path``, its symbolic links followed, lies in the folder ``top`` (or is it)."""
    return Path(path).resolve().is_relative_to(Path(top).resolve())


#: the folders of a run (or benchmark) directory that transferkit writes into and removes from: what they hold
WRITTEN_FOLDERS = {"checkpoints": "checkpoints", "failed": "failed jobs' tracebacks"}


def check_written_folders(top: str | os.PathLike, names: tuple[str, ...] = tuple(WRITTEN_FOLDERS)) -> None:
    """Refuse a ``top/NAME`` (:data:`WRITTEN_FOLDERS`) that is a symbolic link out of ``top``: what
    transferkit writes there would land elsewhere and never be removed (:func:`remove_inside`), as the
    report refuses a linked ``report_files/``. A link that stays inside ``top`` is followed."""
    for name in names:
        path = Path(top) / name
        check(not path.is_symlink() or resolves_inside(path, top),
              f"{path} is a symbolic link (to {path.resolve()}), outside {top}: transferkit writes its "
              f"{WRITTEN_FOLDERS[name]} there and removes them, and does not follow links out of the run (or "
              f"benchmark) directory; remove the link (a folder is made there)")


#: the links :func:`remove_inside` has warned of outside any :func:`links_warned_once`
_LEFT_BEHIND: set = set()
#: those of the outermost :func:`links_warned_once` open in this thread (or task); None outside one
_SCOPE_LINKS: contextvars.ContextVar[set | None] = contextvars.ContextVar("transferkit_warned_links", default=None)


def _warned_links() -> set:
    scoped = _SCOPE_LINKS.get()
    return _LEFT_BEHIND if scoped is None else scoped


def forget_warned_links() -> None:
    """Let :func:`remove_inside` warn again of the links it warned of (:func:`links_warned_once` does at the
    outermost run or benchmark)."""
    _warned_links().clear()


@contextlib.contextmanager
def links_warned_once():
    """Within it, :func:`remove_inside` warns of each link once. The outermost (a run
    :func:`~transferkit.experiment.run_experiment`, a benchmark :func:`~transferkit.bench.run_benchmark`
    with the runs it holds) starts afresh, so that a second run in one process (a notebook, a script
    resuming a directory again) is told of a link too, while a benchmark's runs tell of it once. The scope
    is its thread's (a context variable): a run in another thread starts its own."""
    if _SCOPE_LINKS.get() is not None:
        yield
        return
    _LEFT_BEHIND.clear()  # those warned of outside one too: after a run, a call of its own is told again
    token = _SCOPE_LINKS.set(set())
    try:
        yield
    finally:
        _SCOPE_LINKS.reset(token)


def failed_writing(e: OSError) -> bool:
    """Whether ``e`` is :func:`atomic_path`'s, writing one of transferkit's outputs."""
    return " while writing" in str(e.strerror)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically.
    Temporary files of ``path`` left by a process killed more than an hour ago are removed."""
    path = Path(path)
    check(not path.is_dir(), f"cannot write {str(path)!r}: it is a folder; give the path of a file (in it, e.g. "
                             f"{str(path / ('file' + (path.suffix or '')))!r})")
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in _temporaries(path):
        with contextlib.suppress(OSError):  # another process may remove it first
            if time.time() - stale.stat().st_mtime > STALE_TMP_S:
                stale.unlink()
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:  # named by the file asked for, not by the temporary one
        raise _writing(e, path, in_folder=True) from None
    os.close(fd)
    try:
        try:
            yield Path(tmp)
        except OSError as e:  # the writer's (a full disk, a file too large): named by the file asked for
            if e.filename is not None or e.errno is None:
                raise
            raise _writing(e, path) from e
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the usual permissions
        _fsync(tmp)  # on disk before the rename: a power loss leaves the old file or the new one
        os.replace(tmp, path)
        _fsync_dir(path.parent)  # and the rename itself, or a new file may vanish with the power
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def clear_left_temporaries(path: str | os.PathLike) -> None:
    """Remove the temporary files of ``path`` that :func:`atomic_path` left when a kill came
    before their rename, once ``path`` itself exists (whatever their age: nothing writes them)."""
    path = Path(path)
    if path.exists():
        for stale in _temporaries(path):
            with contextlib.suppress(OSError):
                stale.unlink()


def _temporaries(path: Path):
    """The temporary files :func:`atomic_path` makes beside ``path`` (``.NAME.<random>.tmp``)."""
    return path.parent.glob(f".{glob.escape(path.name)}.*.tmp")


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDWR if WINDOWS else os.O_RDONLY)  # Windows flushes writable handles only
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    """Flush a directory's entries (POSIX; Windows has no directory handles for this)."""
    if WINDOWS:
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # a directory this process may write to but not read: the file itself is flushed
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a directory; the file itself is flushed
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp_path)`` and move the result to ``path`` atomically."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def save_safetensors(path: str | os.PathLike, tensors: dict, metadata: dict | None = None) -> Path:
    """Write ``tensors`` (contiguous) to ``path`` atomically; tensors that share memory (a module
    used twice in a network) are stored each in its own copy, which loading copies back into the
    one parameter. safetensors raises its own error type when the disk is full; it becomes an
    :class:`OSError` that names the file (other failures a :class:`TransferkitError`)."""
    from safetensors.torch import save_file
    tensors = _unshared(tensors)

    def write(tmp: Path) -> None:
        try:
            save_file(tensors, str(tmp), metadata=metadata)
        except OSError:
            raise
        except Exception as e:  # "... No space left on device (os error 28)": the errno a full disk is told by
            code = re.search(r"os error (\d+)", str(e))
            if code is None:
                raise TransferkitError(f"cannot save {path}: {e}") from e
            raise OSError(int(code.group(1)), f"cannot write {path}: {e}") from e
    return atomic_write(path, write)


def _unshared(tensors: dict) -> dict:
    """safetensors refuses tensors that share memory; give each its own storage."""
    seen, out = set(), {}
    for k, v in tensors.items():
        ptr = v.untyped_storage().data_ptr() if v.numel() else None
        out[k] = v.clone() if ptr in seen else v
        if ptr is not None:
            seen.add(ptr)
    return out


def load_safetensors(path: str | os.PathLike, what: str, hint: str = "") -> tuple[dict, dict]:
    """``(tensors, metadata)`` of a safetensors file, in one read; a missing, truncated or
    foreign file raises a :class:`TransferkitError` naming it, with ``hint`` on what to do."""
    from safetensors import safe_open
    try:
        with safe_open(str(path), "pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except Exception as e:  # safetensors raises its own error types
        raise TransferkitError(f"{what} {path} is unreadable ({e}){f': {hint}' if hint else ''}") from e


def write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """``obj`` as JSON (:func:`json_text`), atomically."""
    return write_text(path, json_text(obj))


def json_text(obj: Any) -> str:
    """``obj`` as indented JSON ending in a newline, as the run's files and the commands' ``--format json``
    write it; a NaN or infinite number is written as ``null`` (JSON has no such number: strict parsers,
    ``jq`` and JavaScript refuse Python's ``NaN``)."""
    try:
        text = json.dumps(obj, indent=2, sort_keys=False, default=_jsonable, allow_nan=False)
    except ValueError:  # a NaN or infinity somewhere: the rare file that has one is walked once more
        text = json.dumps(_finite(obj), indent=2, sort_keys=False, default=lambda o: _finite(_jsonable(o)),
                          allow_nan=False)
    return text + "\n"


def _finite(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float (in mappings, lists and tuples) as ``None``."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def read_json(path: str | os.PathLike, what: str = "file", hint: str = "") -> Any:
    """The JSON in ``path``; a file that is not readable JSON (e.g. truncated by a full disk)
    raises a :class:`TransferkitError` naming it, with ``hint`` on what to do."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TransferkitError(f"{what} {path} is unreadable ({e}){f': {hint}' if hint else ''}") from e


def read_job(path: str | os.PathLike, keys=()) -> dict:
    """A finished job's stored result (a JSON object with ``keys``); a broken one is named,
    with how to run that job again."""
    hint = "delete it to run that job again"
    row = read_json(path, "job result", hint)
    missing = [k for k in keys if not isinstance(row, dict) or k not in row]
    if not isinstance(row, dict) or missing:
        raise TransferkitError(f"job result {path} is not a result row"
                               f"{f' (it lacks {missing})' if isinstance(row, dict) else ''}: {hint}")
    return row


def job_stem(method, setting, seed) -> str:
    """The file name (without suffix) of a run's job: ``METHOD-SETTING-sSEED``; on Windows the
    characters its file names refuse (``ft_unit:conv2``'s colon) are written ``@``."""
    stem = f"{method}-{setting}-s{seed}"
    return re.sub(r'[<>:"|?*]', "@", stem) if WINDOWS else stem


def check_job_name(path: str | os.PathLike, row: dict) -> None:
    """Refuse a run's job file ``METHOD-SETTING-sSEED.json`` that holds another job's row (one
    copied or renamed by hand): its rows would count a job twice, or under another name."""
    named = job_stem(row.get("method"), row.get("setting"), row.get("seed"))
    check(Path(path).stem == named, f"job result {path} holds the row of {row.get('method')} seed {row.get('seed')} "
                                    f"({row.get('setting')}), whose file is {named}.json: copied or renamed by hand? "
                                    f"delete it to run that job again")


@contextlib.contextmanager
def waiting_lock(path: str | os.PathLike, on_wait: Callable[[str], Any] | None = None, remind_s: float = 300,
                 poll_s: float = 0.2):
    """Hold the operating-system lock (``flock``; on Windows ``msvcrt.locking`` of one byte past the
    holder's text, as Windows locks keep others from reading what they cover) of the file ``path``,
    waiting while another process holds it (released when its holder ends or dies). The holder writes
    ``pid N since HH:MM:SS`` in the file; ``on_wait(holder)`` is called with that text when the lock is
    found held, and again every ``remind_s`` seconds of waiting (``..., waited N min``). Without ``fcntl``
    or ``msvcrt`` it does not lock."""
    if fcntl is None and msvcrt is None:
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = open_regular(path, os.O_RDWR | os.O_CREAT, "lock file")
    locked = False
    try:
        start, said = time.monotonic(), None
        while not (locked := _try_lock(fd)):
            waited = time.monotonic() - start
            if on_wait is not None and (said is None or waited - said >= remind_s):
                holder = _lock_holder(fd)
                on_wait(holder if said is None else f"{holder}, waited {waited / 60:.0f} min")
                said = waited
            time.sleep(poll_s)
        with contextlib.suppress(OSError):  # who holds it, for a process that waits (nothing else reads it)
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, f"pid {os.getpid()} since {time.strftime('%H:%M:%S')}".encode())
        yield
    finally:
        if locked and fcntl is None:  # Windows releases a closed file's locks when it gets to it: at once here
            with contextlib.suppress(OSError):
                os.lseek(fd, _MSVCRT_BYTE, os.SEEK_SET)
                msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        os.close(fd)  # closing releases the lock; the file stays (removing it would race a waiter)


#: the byte :func:`waiting_lock` locks with ``msvcrt``: past the holder's text, which a waiting process reads
_MSVCRT_BYTE = 1 << 20


#: open flags that keep a file of transferkit's from being reached through a symbolic link (where the OS has them)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def open_regular(path: str | os.PathLike, flags: int, what: str, instead: str = "") -> int:
    """``os.open(path, flags)`` of a regular file that is not a symbolic link, or a
    :class:`TransferkitError` naming ``path`` (``what``: the file's role, "lock file"; ``instead``: what
    else it may be, said in the error): a link there would make transferkit write (a process id, a
    metrics line) into the file it leads to."""
    if not hasattr(os, "O_NOFOLLOW") and os.path.islink(path):  # Windows: checked before opening
        raise _not_regular(path, what, instead)
    try:
        fd = os.open(path, flags | _NOFOLLOW, 0o666 & ~_UMASK)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO) or os.path.islink(path):
            raise _not_regular(path, what, instead) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _not_regular(path, what, instead)
    return fd


def _not_regular(path, what: str, instead: str = "") -> TransferkitError:
    try:
        kind = f"a symbolic link (to {os.readlink(path)})"
    except OSError:  # not a link
        kind = "not a regular file"
    return TransferkitError(f"the {what} {path} is {kind}, which transferkit does not follow or write: remove it "
                            f"(a run or cache makes its own){instead}")


#: the process's own output streams: links, but to what the user opened (a terminal, a pipe, ``> log.txt``)
_OWN_STREAMS = re.compile(r"/dev/(stdout|stderr|fd/\d+)|/proc/self/fd/\d+")

#: what a metrics file may be besides a regular file, said where one is refused
_STREAMS_INSTEAD = "a character device or the process's own output stream (/dev/null, /dev/stdout, /dev/stderr)"


def is_stream(path: str | os.PathLike, mode: int | None = None) -> bool:
    """Whether ``path`` is one of the process's own output streams that is open (``/dev/stdout``,
    ``/dev/stderr``, ``/dev/fd/N``, ``/proc/self/fd/N``, whatever they lead to) or, through links too, a
    character device (``/dev/null``, a terminal; or the ``st_mode`` given is one): written to, never read
    back. A named pipe is not one (:func:`check_stream` refuses it)."""
    if _OWN_STREAMS.fullmatch(str(path)):
        return mode is not None or os.path.exists(path)
    if mode is None:
        try:
            mode = os.stat(path).st_mode
        except OSError:  # absent, or a dangling link
            return False
    return stat.S_ISCHR(mode)


@functools.cache
def _pipe_device() -> int:
    """The ``st_dev`` of an anonymous pipe (``| tee``): the system's pipe file system, which no named
    pipe is on (those live on the file system of their path)."""
    r, w = os.pipe()
    try:
        return os.fstat(r).st_dev
    finally:
        os.close(r)
        os.close(w)


def check_stream(path: str | os.PathLike, what: str = "metrics file") -> bool:
    """Refuse a ``path`` that names a stream transferkit does not write: a named pipe (each line
    reopens it: with no reader the open waits for one, and a reader gone blocks the next line), also
    behind one of the process's own streams (``/dev/fd/N`` of a named pipe it opened; an anonymous pipe,
    ``| tee``, is written), or one of the process's own streams whose descriptor is not open (or that
    the system has not: macOS has no ``/proc``). Returns :func:`is_stream` of ``path`` (one ``stat``)."""
    fix = f"give a regular file (follow it with tail -f) or {_STREAMS_INSTEAD}"
    own = bool(_OWN_STREAMS.fullmatch(str(path)))
    try:
        info = os.stat(path)
    except OSError:  # absent (a regular file is made), or a closed descriptor
        info = None
    check(not own or info is not None,
          f"the {what} {path} names no open output stream of this process (a closed descriptor, or a path "
          f"this system has not); {fix}")
    if info is None:
        return False
    check(not stat.S_ISFIFO(info.st_mode) or (own and info.st_dev == _pipe_device()),
          f"the {what} {path} is a named pipe{' (the one that descriptor opened)' if own else ''}, which "
          f"transferkit does not write (each line would reopen it: training would wait for a reader, or stop "
          f"when one goes); {fix}")
    return is_stream(path, info.st_mode)


def _try_lock(fd: int) -> bool:
    """Take the exclusive lock of ``fd`` without waiting (``flock``, else ``msvcrt.locking``): False
    while another process holds it."""
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
    os.lseek(fd, _MSVCRT_BYTE, os.SEEK_SET)
    try:
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except PermissionError:  # EACCES: held
        return False
    return True


@contextlib.contextmanager
def cache_lock(path: str | os.PathLike, what: str):
    """Hold the lock (``.lock`` beside it) of the cache file ``path`` while this process builds
    what it keeps: another process that needs it meanwhile waits, saying on stderr that it waits
    for one that ``what`` (``builds the domain syndigits``), then reads it. A cache folder where no
    lock file can be made: the build goes on unlocked (its write then warns)."""
    lock = Path(path).with_suffix(".lock")
    with contextlib.ExitStack() as held:
        with contextlib.suppress(OSError):
            held.enter_context(waiting_lock(lock, lambda holder: print(
                f"transferkit: waiting for another process that {what} ({holder}; {lock})", file=sys.stderr,
                flush=True)))
        yield


def _lock_holder(fd: int) -> str:
    """What the holder of :func:`waiting_lock`'s file wrote (``pid N since HH:MM:SS``), or
    ``another process`` (a lock file written before it named its holder)."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)  # not os.pread: Windows has none
        text = os.read(fd, 200).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text if text.startswith("pid ") else "another process"


@contextlib.contextmanager
def directory_lock(directory: str | os.PathLike):
    """Hold ``directory/.lock`` (holding this process's id) while a run or benchmark works
    there. A second process gets an error naming the holder instead of running every job
    again beside it. The lock is an operating-system file lock (``flock``), which the kernel
    releases when its process dies: the lock file of a killed run is free to take, and two
    processes resuming its directory at once cannot both take it. Without ``fcntl``
    (Windows) or ``flock`` (some network file systems) a lock file whose process no longer
    runs is taken over instead."""
    path = Path(directory) / ".lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _flock(directory, path) if fcntl is not None else None
    if fd is None:
        with _pid_file_lock(directory, path):
            yield path
        return
    try:
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield path
    finally:
        try:
            with contextlib.suppress(OSError):  # gone, or a directory made read-only: the error that ends the work
                path.unlink()  # while still held: a process that opened this file checks that it is still the lock
        finally:
            os.close(fd)  # releases the lock whatever happened


def _flock(directory, path: Path) -> int | None:
    """Open ``path`` and lock it without waiting; retry when the file was replaced between
    opening and locking (its holder removed it on release). Returns the descriptor, or None
    on a file system without ``flock`` (some NFS and Lustre mounts)."""
    while True:
        fd = open_regular(path, os.O_RDWR | os.O_CREAT, "lock file")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise _in_use(directory, path) from None
        except OSError:  # ENOLCK, ENOSYS...: the pid-file lock instead
            os.close(fd)
            return None
        try:
            held, opened = os.lstat(path), os.fstat(fd)
            if (held.st_dev, held.st_ino) == (opened.st_dev, opened.st_ino):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def directory_holder(directory: str | os.PathLike) -> str | None:
    """``"pid N"`` of the process that holds ``directory``'s lock (:func:`directory_lock`) now,
    or None where none does (without ``fcntl``: the pid-file lock's process while it runs; on a file
    system without ``flock``, None: it cannot tell)."""
    path = Path(directory) / ".lock"
    if not path.is_file():
        return None
    if fcntl is None:  # the pid-file lock: held while its process runs
        pid = _lock_pid(path)
        return f"pid {pid}" if pid and process_running(pid) else None
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return f"pid {_lock_pid(path) or 'unknown'}"
    except OSError:
        return None
    finally:
        os.close(fd)  # closing releases a lock it got
    return None


def _in_use(directory, path: Path) -> TransferkitError:
    holder = f"pid {_lock_pid(path) or 'unknown'}"
    return TransferkitError(f"{directory} is in use by another transferkit process ({holder}); let it "
                            f"finish or stop it, then resume")


@contextlib.contextmanager
def _pid_file_lock(directory, path: Path):
    """The lock without ``fcntl``: a file created whole with this process's id; one whose
    process no longer runs is taken over."""
    while not _create_lock(path):
        pid = _lock_pid(path)
        if pid and pid != os.getpid() and process_running(pid):
            raise _in_use(directory, path)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if _lock_pid(path) == os.getpid():  # not a lock another process took over meanwhile
                path.unlink()


def _lock_pid(path: Path) -> int:
    """The process id a pid-file lock holds (0 where it holds none)."""
    try:
        return int(path.read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def _create_lock(path: Path) -> bool:
    """Create the lock file ``path`` holding this process's id, in one step (a hard link of a
    written file), so that no other process ever reads it empty; False if it exists."""
    tmp = path.with_name(f".lock.{os.getpid()}.tmp")
    tmp.write_text(str(os.getpid()))
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError:  # a file system without hard links: create, then write
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        try:
            os.write(fd, str(os.getpid()).encode())
        finally:
            os.close(fd)
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def process_running(pid: int) -> bool:
    """Whether process ``pid`` exists (another user's counts)."""
    if WINDOWS:  # os.kill(pid, 0) would send CTRL_C_EVENT there
        return _running_windows(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _running_windows(pid: int) -> bool:
    import ctypes

    kernel32 = ctypes.windll.kernel32
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return kernel32.GetLastError() == 5  # ERROR_ACCESS_DENIED: it exists, another user's
    try:
        code = ctypes.c_ulong()
        return bool(kernel32.GetExitCodeProcess(handle, ctypes.byref(code))) and code.value == 259  # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)


def append_jsonl(path: str | os.PathLike, obj: Any) -> None:
    """Append one JSON line (metrics streams). A line torn by a kill is ended first, so that
    :func:`read_jsonl` skips it alone and not the record appended after it. A NaN or infinite number
    is written as ``null``, as :func:`write_json` writes it. A ``path`` that is a symbolic link (or not
    a regular file) is refused (:func:`open_regular`), but for a character device or one of the
    process's own streams (:func:`is_stream`: ``/dev/null`` keeps no lines, ``/dev/stdout`` shows them),
    which is written to; a named pipe is refused (:func:`check_stream`, which stats ``path`` once). A
    stream whose reader has gone (``| head``) drops the line, as the commands' closed stdout does."""
    path = Path(path)
    if check_stream(path):  # a terminal or the process's stream has no end to look at: the line alone
        with contextlib.suppress(BrokenPipeError), \
                os.fdopen(os.open(path, os.O_WRONLY | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)), "wb") as f:
            check(is_stream(path, os.fstat(f.fileno()).st_mode), f"the metrics file {path} changed while it was "
                                                                 f"opened: it is no longer {_STREAMS_INSTEAD}")
            f.write((_json_line(obj) + "\n").encode("utf-8"))
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    instead = f"; a metrics file may also be {_STREAMS_INSTEAD}"
    with os.fdopen(open_regular(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, "metrics file", instead), "a+b") as f:
        end = f.seek(0, os.SEEK_END)
        if end:
            f.seek(end - 1)
        torn = end > 0 and f.read(1) != b"\n"
        f.write((("\n" if torn else "") + _json_line(obj) + "\n").encode("utf-8"))


def _json_line(obj: Any) -> str:
    """``obj`` as one line of strict JSON: a NaN or infinite number as ``null``."""
    try:
        return json.dumps(obj, default=_jsonable, allow_nan=False)
    except ValueError:  # the rare line with one is walked once more
        return json.dumps(_finite(obj), default=lambda o: _finite(_jsonable(o)), allow_nan=False)


def read_jsonl(path: str | os.PathLike) -> list:
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def _jsonable(obj: Any):
    if hasattr(obj, "tolist"):  # numpy / torch: a scalar (0-d) becomes a number, an array a list
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def cache_dir() -> Path:
    """transferkit's cache, ``$TRANSFERKIT_CACHE`` or ``~/.cache/transferkit``: built-in domains
    (``domains/``), decoded image folders (``folders/``), source networks (``pretrained/``) and
    text embeddings (``text/``)."""
    root = os.environ.get("TRANSFERKIT_CACHE") or os.path.join(Path.home(), ".cache", "transferkit")
    path = Path(root).expanduser()  # a quoted "~/..." (a .env file) is the home folder, not a folder named ~
    if path not in _CACHES_CHECKED:
        _warn_if_others_write(path)
    return path


_CACHES_CHECKED: set = set()  # each cache directory is checked (and named) once per process


def _warn_if_others_write(path: Path) -> None:
    """Warn once when others than its user may write the cache ``path`` (another owner, writable by
    others, or by a group other than the user's own private group): they could change the images and
    labels of its domains and the source networks every run reads. POSIX mode bits: not on Windows."""
    try:
        info = path.stat()
    except OSError:  # not made yet: checked once it exists
        return
    _CACHES_CHECKED.add(path)
    if os.name == "nt":
        return
    if info.st_uid != os.getuid():
        why, fix = f"it belongs to another user (uid {info.st_uid})", "chown it, or"
    elif info.st_mode & 0o002:
        why, fix = "every user may write it", f"chmod go-w {path}, or"
    elif info.st_mode & 0o020 and not _own_group(info.st_gid):
        why, fix = f"its group (gid {info.st_gid}) may write it", f"chmod g-w {path}, or"
    else:
        return
    named = " ($TRANSFERKIT_CACHE)" if os.environ.get("TRANSFERKIT_CACHE") else ""
    warn(f"the cache {path}{named} is not yours alone: {why}, so others could change the domains, labels and "
         f"source networks every run reads from it; use a cache only you may write ({fix} set TRANSFERKIT_CACHE "
         f"to a folder of your own)")


def _own_group(gid: int) -> bool:
    """``gid`` is the user's own private group (named as the user, no other member)."""
    try:
        import grp
        import pwd
        group, user = grp.getgrgid(gid), pwd.getpwuid(os.getuid())
    except (ImportError, KeyError):
        return False
    return group.gr_name == user.pw_name and not set(group.gr_mem) - {user.pw_name}


VARIABLE = re.compile(r"\$\{?[A-Za-z_]\w*\}?|%[A-Za-z_]\w*%")


def path_hints(path: str | os.PathLike) -> list[str]:
    """What may be wrong with a path as written: an environment variable (not expanded),
    Windows backslashes, a tab, line break or other control character (YAML reads ``\\t`` in
    double quotes as a tab, ``\\a`` as a bell)."""
    text, hints = str(path), []
    if VARIABLE.search(text):
        hints.append(f"{VARIABLE.search(text).group()} is not expanded: transferkit reads paths as written (only ~ "
                     f"is the home folder), so write the path out (or let the shell expand it, e.g. --set "
                     f"\"source=folder:$DATA/train\")")
    if any(c < " " for c in text):
        hints.append("the path holds a tab or line break (or another control character): in double quotes YAML "
                     "reads \\t, \\n, \\a... as those (C:\\nets\\a.pt); write paths with / (or in single quotes)")
    elif "\\" in text and os.sep == "/":  # on Windows a backslash is the separator
        hints.append("write the path with / instead of Windows backslashes (data/train, not data\\train)")
    return hints


def relative_hint(path: str | os.PathLike) -> str:
    """What a missing path was looked up against (the current directory, for a relative one), and
    what may be wrong with it as written (:func:`path_hints`)."""
    hints = path_hints(path)
    if not Path(path).is_absolute() and not hints:
        hints.append(f"a relative path, read from the current directory {os.getcwd()!r}: run or resume from the "
                     f"directory it is relative to")
    return f" ({'; '.join(hints)})" if hints else ""
