"""Per-node precision overrides as text (`--keep NODE_OR_GLOB=DTYPE`, keep files) and the
CompileOptions a set of compile flags describes: the library form of the `xpu compile` options, so
tools that build options from files (the accuracy gate's manifests) and the CLI parse them the same
way, and tools that write keep files (`xpu acc bisect`) write what the compiler reads.

A keep file holds one `NODE_OR_GLOB=DTYPE` per line; `#` starts a comment. Patterns are fnmatch
globs matched against a node's name and the ONNX nodes it stands for."""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ..errors import UserError
from .context import CompileOptions


def keep_pair(text: str, where: str) -> tuple[str, str]:
    """`NODE_OR_GLOB=DTYPE` as (pattern, dtype), or a UserError naming `where`."""
    pattern, sep, dtype = text.rpartition("=")
    if not sep or not pattern:
        raise UserError(f"{where}: expected NODE_OR_GLOB=DTYPE, e.g. 'head/*=fp32', got {text!r}")
    return pattern.strip(), dtype.strip()


def read_keep_file(path: str | Path) -> list[tuple[str, str]]:
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read ({exc})") from None
    pairs = []
    for i, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].strip()
        if line:
            pairs.append(keep_pair(line, f"{path}:{i}"))
    return pairs


def exact_pattern(node: str) -> str:
    """A keep pattern that matches exactly `node` (its glob characters escaped)."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in node)


def keep_file_text(pairs: Iterable[tuple[str, str]], comments: Iterable[str] = ()) -> str:
    """A keep file: `# comment` lines, then one `PATTERN=DTYPE` line per pair."""
    lines = [f"# {c}" for c in comments] + [f"{pattern}={dtype}" for pattern, dtype in pairs]
    return "\n".join(lines) + "\n"


def options_from_spec(precision: str = "fp32", keep: Iterable[str] = (), keep_file: str | Path | None = None,
                      shapes: Iterable[str] = (), calibration: str | Path | None = None,
                      calibration_method: str = "minmax", arch=None,
                      const_inputs: str | Path | None = None) -> CompileOptions:
    """The CompileOptions the `xpu compile` flags describe (files read, specs parsed)."""
    from ..runtime import read_npz
    from .frontend import parse_shape_spec

    pairs = [keep_pair(k, "--keep") for k in keep]
    if keep_file:
        pairs += read_keep_file(keep_file)
    bound = dict(parse_shape_spec(s) for s in shapes)
    calib = read_npz(calibration) if calibration else None
    frozen = read_npz(const_inputs) if const_inputs else {}
    return CompileOptions(precision=precision, keep=pairs, shapes=bound, calibration=calib,
                          calibration_method=calibration_method, arch=arch, const_inputs=frozen)
