"""Safe output files, for every writer in the project (programs, npz, traces, reports, keep files).

The rules a user relies on: an existing file is replaced only when asked (`force`), an input is
never written over, and a file appears whole or not at all (written to a temporary file in the
same directory, then renamed over the target; the temporary file is removed on any failure,
disk full included). Problems are an `OutputError`: one line that names the path.
"""
from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import XpuError


class OutputError(XpuError, ValueError):
    """An output path cannot be written (exists, is an input, no such directory, disk full...)."""


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output(path: str | Path, *, force: bool = False, inputs: Iterable[str | Path] = ()) -> Path:
    """`path` as a Path if a writer may create it, else an OutputError saying why."""
    path = Path(path)
    for source in inputs:
        if source is not None and (_same_file(path, Path(source)) or
                                   os.path.abspath(path) == os.path.abspath(source)):
            raise OutputError(f"{path}: is an input of this command; refusing to write over it")
    if path.is_dir():
        raise OutputError(f"{path}: is a directory; give a file name")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"{path}: directory {parent} does not exist")
    if (path.exists() or path.is_symlink()) and not force:
        raise OutputError(f"{path}: exists; pass --force to overwrite it")
    return path


def temp_path_beside(path: Path) -> Path:
    """A fresh hidden name in `path`'s directory (so the final rename stays on one file system)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


@contextmanager
def atomic_output(path: str | Path, *, force: bool = False, inputs: Iterable[str | Path] = ()) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is renamed to `path`, on failure removed.

        with atomic_output("out.npz", force=force, inputs=[model]) as tmp:
            np.savez(tmp, **arrays)
    """
    path = check_output(path, force=force, inputs=inputs)
    tmp = temp_path_beside(path)
    try:
        yield tmp
        if not tmp.exists():
            raise OutputError(f"{path}: the writer produced no file")
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise OutputError(f"{path}: cannot write ({_reason(exc)}); nothing was written") from None
        raise


def _reason(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on the device"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "permission denied"
    return exc.strerror or type(exc).__name__


def write_bytes_atomic(path: str | Path, data: bytes, *, force: bool = False,
                       inputs: Iterable[str | Path] = ()) -> Path:
    """Write `data` to `path` whole or not at all (see `atomic_output`)."""
    with atomic_output(path, force=force, inputs=inputs) as tmp:
        # os.open with 0o666 lets the umask decide the permissions, as for any other output file
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def write_text_atomic(path: str | Path, text: str, *, force: bool = False,
                      inputs: Iterable[str | Path] = ()) -> Path:
    """Write `text` (UTF-8) to `path` whole or not at all."""
    return write_bytes_atomic(path, text.encode("utf-8"), force=force, inputs=inputs)
