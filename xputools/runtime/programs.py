"""Open program files: `.xpu` containers and `.xasm` text."""
from __future__ import annotations

from pathlib import Path

from device_model.program import Program

from ..errors import UserError


def load_program_file(path: Path | str) -> Program:
    """The Program in a `.xpu` container or a `.xasm` text file (UserError if it cannot be read)."""
    from device_model.assembly import assemble
    from device_model.container import load_program

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    if path.suffix == ".xasm":
        try:
            return assemble(path.read_text(encoding="utf-8"), source=str(path))
        except UnicodeDecodeError:
            raise UserError(f"{path}: not a text assembly file") from None
    return load_program(path)
