"""Reading and writing the .npz files that carry inputs and outputs (never pickled objects)."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ..errors import UserError

MAX_NPZ_BYTES = 4 << 30


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Arrays from an .npz file (no pickled objects)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise UserError(f"{path}: not a readable .npz file ({exc})") from None


def write_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    np.savez(Path(path), **arrays)
