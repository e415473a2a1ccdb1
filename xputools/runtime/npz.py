"""Reading and writing the .npz files that carry inputs and outputs (never pickled objects).

An .npz is untrusted: its zip directory and each member's .npy header are read first, and the
sizes they declare are checked (against MAX_NPZ_BYTES, and against each other) before any array
data is read, so a zip bomb or a header claiming 40 GB fails in a millisecond."""
from __future__ import annotations

import ast
import struct
import zipfile
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

from device_model.fileio import atomic_output

from ..errors import UserError

MAX_NPZ_BYTES = 4 << 30
MAX_MEMBERS = 10_000
_NPY_MAGIC = b"\x93NUMPY"


def read_npz(path: str | Path, max_bytes: int = MAX_NPZ_BYTES) -> dict[str, np.ndarray]:
    """Arrays from an .npz file (no pickled objects), at most `max_bytes` of array data in all."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        with open(path, "rb") as f:
            head = f.read(len(_NPY_MAGIC))
        if head == _NPY_MAGIC:
            raise UserError(f"{path}: a single .npy array, not an .npz archive: save it with "
                            "numpy.savez(PATH, NAME=array) so each array is keyed by its input name")
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            if len(members) > MAX_MEMBERS:
                raise UserError(f"{path}: {len(members)} arrays, more than {MAX_MEMBERS}")
            total = sum(m.file_size for m in members)
            if total > max_bytes:
                raise UserError(f"{path}: declares {total} bytes of arrays, more than the {max_bytes} allowed")
            arrays = {}
            for m in members:
                name = m.filename[:-4] if m.filename.endswith(".npy") else m.filename
                arrays[name] = _read_member(archive, m, path)
            return arrays
    except UserError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError, KeyError,
            NotImplementedError, RuntimeError) as exc:
        raise UserError(f"{path}: not a readable .npz file ({type(exc).__name__}: {exc})") from None


def _read_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo, path: Path) -> np.ndarray:
    where = f"{path}: array {member.filename!r}"
    with archive.open(member) as f:
        dtype, shape, fortran = _read_header(f, where)
        count = 1
        for d in shape:
            count *= d
        nbytes = count * dtype.itemsize
        if nbytes > member.file_size:  # the header may not promise more data than the member holds
            raise UserError(f"{where}: header declares {nbytes} bytes, the archive holds {member.file_size}")
        data = bytearray(nbytes)  # writable, like np.load's arrays
        got = f.readinto(data)
        if got != nbytes:
            raise UserError(f"{where}: truncated ({got} of {nbytes} bytes)")
    arr = np.frombuffer(data, dtype=dtype, count=count)
    return arr.reshape(shape[::-1]).transpose() if fortran else arr.reshape(shape)


def _read_header(f, where: str) -> tuple[np.dtype, tuple[int, ...], bool]:
    """dtype, shape and order from an .npy header, parsed with literal_eval (no pickle, no eval)."""
    magic = f.read(8)
    if len(magic) != 8 or magic[:6] != _NPY_MAGIC:
        raise UserError(f"{where}: not an .npy array")
    major = magic[6]
    size_fmt = {1: "<H", 2: "<I", 3: "<I"}.get(major)
    if size_fmt is None:
        raise UserError(f"{where}: unsupported .npy version {major}")
    raw = f.read(struct.calcsize(size_fmt))
    (hlen,) = struct.unpack(size_fmt, raw) if len(raw) == struct.calcsize(size_fmt) else (-1,)
    if not 0 < hlen <= 1 << 16:
        raise UserError(f"{where}: bad .npy header length")
    header = f.read(hlen).decode("latin1" if major < 3 else "utf-8", errors="replace")
    try:
        d = ast.literal_eval(header)
        dtype = npy_format.descr_to_dtype(d["descr"])
        shape, fortran = tuple(d["shape"]), bool(d["fortran_order"])
    except (ValueError, SyntaxError, KeyError, TypeError, MemoryError, RecursionError):
        raise UserError(f"{where}: unreadable .npy header") from None
    if dtype.hasobject:
        raise UserError(f"{where}: holds Python objects (pickled data is never loaded)")
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
        raise UserError(f"{where}: bad shape {shape}")
    return dtype, shape, fortran


def write_npz(path: str | Path, arrays: dict[str, np.ndarray], *, force: bool = False, inputs=()) -> Path:
    """Write arrays to `path` exactly (no '.npz' appended), atomically; an existing file only with
    `force`, never an input."""
    with atomic_output(path, force=force, inputs=inputs) as tmp:
        with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a path
            np.savez(f, **arrays)
    return Path(path)
