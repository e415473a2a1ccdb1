"""Architecture presets: load, validate and describe an XPU variant.

A preset is a TOML file (see presets/). Every key is checked against SCHEMA: an unknown key, a
wrong type or an impossible size is an `ArchError` naming the key.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import XpuError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PRESET_DIR = Path(__file__).parent / "presets"
DEFAULT_ARCH = "xpu1"
MATMUL_DTYPES = ("f32", "bf16", "f16", "fp8e4", "fp8e5", "i8")


class ArchError(XpuError, ValueError):
    """A preset that is missing, malformed or describes an impossible device."""


_POS_INT = ("int>0",)
_NONNEG_INT = ("int>=0",)
_POS_NUM = ("num>0",)
_ENGINE_COST = {"fixed_cycles": _NONNEG_INT, "elements_per_cycle": _POS_NUM}

SCHEMA: dict[str, Any] = {
    "name": ("str",),
    "description": ("str",),
    "clock_ghz": _POS_NUM,
    "semaphores": _POS_INT,
    "dma_queues": _POS_INT,
    "hbm": {"size_bytes": _POS_INT, "bandwidth_gbps": _POS_NUM},
    "sbuf": {"partitions": _POS_INT, "bytes_per_partition": _POS_INT},
    "psum": {"partitions": _POS_INT, "bytes_per_partition": _POS_INT, "banks": _POS_INT},
    "pe": {"rows": _POS_INT, "cols": _POS_INT, "max_n": _POS_INT, "fixed_cycles": _NONNEG_INT,
           "cycles_per_column": {d: _POS_INT for d in MATMUL_DTYPES}},
    "act": _ENGINE_COST,
    "dve": _ENGINE_COST,
    "pool": _ENGINE_COST,
    "dma": {"latency_cycles": _NONNEG_INT, "run_overhead_bytes": _NONNEG_INT, "queue_gbps": _POS_NUM},
    "act_table": {"segments": _POS_INT},
    "host": {"call_cycles": _NONNEG_INT, "gbps": _POS_NUM},
}


# Upper bounds that keep every derived number (cycles, bytes, allocations) sane; any other number
# stays below MAX_NUMBER. A value outside them is a typo, not a design point.
MAX_NUMBER = 2**40
MAX_VALUE = {
    "clock_ghz": 100, "semaphores": 4096, "sbuf.partitions": 1024, "psum.partitions": 1024,
    "sbuf.bytes_per_partition": 1 << 30, "psum.bytes_per_partition": 1 << 30, "psum.banks": 1024,
    "pe.rows": 1024, "pe.cols": 1024, "pe.max_n": 1 << 20, "act_table.segments": 1 << 20,
    "hbm.bandwidth_gbps": 1e6, "dma.queue_gbps": 1e6, "host.gbps": 1e6,
}


def _check(value: Any, rule: Any, key: str) -> None:
    if isinstance(rule, dict):
        if not isinstance(value, dict):
            raise ArchError(f"arch key '{key}' must be a table")
        for k in value:
            if k not in rule:
                raise ArchError(f"unknown arch key '{key}.{k}' (expected one of {', '.join(rule)})")
        for k, sub in rule.items():
            if k not in value:
                raise ArchError(f"missing arch key '{key}.{k}'")
            _check(value[k], sub, f"{key}.{k}")
        return
    kind = rule[0]
    if kind == "str":
        if not isinstance(value, str):
            raise ArchError(f"arch key '{key}' must be a string, got {value!r}")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ArchError(f"arch key '{key}' must be a number, got {value!r}")
    if kind.startswith("int") and not isinstance(value, int):
        raise ArchError(f"arch key '{key}' must be an integer, got {value!r}")
    if kind.endswith(">0") and not value > 0:  # (also refuses nan)
        raise ArchError(f"arch key '{key}' must be > 0, got {value!r}")
    if kind.endswith(">=0") and value < 0:
        raise ArchError(f"arch key '{key}' must be >= 0, got {value!r}")
    if not math.isfinite(value):
        raise ArchError(f"arch key '{key}' must be a finite number, got {value!r}")
    limit = MAX_VALUE.get(key.lstrip("."), MAX_NUMBER)
    if value > limit:
        raise ArchError(f"arch key '{key}' must be at most {limit}, got {value!r}")


@dataclass(frozen=True)
class Arch:
    """A validated preset. `raw` is the parsed TOML; attributes are the commonly used numbers."""

    raw: dict
    hash: str

    def __getitem__(self, key: str) -> Any:
        return self.raw[key]

    name = property(lambda self: self.raw["name"])
    clock_ghz = property(lambda self: float(self.raw["clock_ghz"]))
    partitions = property(lambda self: self.raw["sbuf"]["partitions"])
    sbuf_bytes = property(lambda self: self.raw["sbuf"]["bytes_per_partition"])
    psum_bytes = property(lambda self: self.raw["psum"]["bytes_per_partition"])
    hbm_bytes = property(lambda self: self.raw["hbm"]["size_bytes"])
    semaphores = property(lambda self: self.raw["semaphores"])
    dma_queues = property(lambda self: self.raw["dma_queues"])

    def cycles_to_seconds(self, cycles: float) -> float:
        """Device time of `cycles` at this arch's clock."""
        return cycles / (self.clock_ghz * 1e9)

    def peak_flops(self, dtype: str) -> float:
        """Peak PE FLOP/s for an input dtype (2 FLOPs per MAC)."""
        pe = self.raw["pe"]
        return 2.0 * pe["rows"] * pe["cols"] * self.clock_ghz * 1e9 / pe["cycles_per_column"][dtype]

    def hbm_bytes_per_second(self) -> float:
        """Peak HBM bandwidth in bytes per second."""
        return self.raw["hbm"]["bandwidth_gbps"] * 1e9

    def ridge_point(self, dtype: str = "bf16") -> float:
        """FLOP/byte above which a kernel is compute-bound (roofline ridge)."""
        return self.peak_flops(dtype) / self.hbm_bytes_per_second()

    def describe(self) -> dict:
        """The preset plus its derived peaks, for `xpu arch show`."""
        return {
            "name": self.name,
            "description": self.raw["description"],
            "hash": self.hash,
            "preset": self.raw,
            "derived": {
                "peak_tflops": {d: round(self.peak_flops(d) / 1e12, 3) for d in MATMUL_DTYPES},
                "hbm_gbps": self.raw["hbm"]["bandwidth_gbps"],
                "sbuf_mib": self.partitions * self.sbuf_bytes / 2**20,
                "psum_kib": self.raw["psum"]["partitions"] * self.psum_bytes / 2**10,
                "ridge_flop_per_byte": {d: round(self.ridge_point(d), 2) for d in MATMUL_DTYPES},
            },
        }


def _validate_sizes(raw: dict) -> None:
    if raw["psum"]["partitions"] != raw["sbuf"]["partitions"]:
        raise ArchError("arch key 'psum.partitions' must equal 'sbuf.partitions'")
    if raw["pe"]["rows"] > raw["sbuf"]["partitions"]:
        raise ArchError("arch key 'pe.rows' cannot exceed 'sbuf.partitions'")
    if raw["pe"]["cols"] > raw["psum"]["partitions"]:
        raise ArchError("arch key 'pe.cols' cannot exceed 'psum.partitions'")
    if raw["psum"]["bytes_per_partition"] % raw["psum"]["banks"]:
        raise ArchError("arch key 'psum.banks' must divide 'psum.bytes_per_partition'")
    if raw["pe"]["max_n"] * 4 > raw["psum"]["bytes_per_partition"]:
        raise ArchError("arch key 'pe.max_n' does not fit one partition of psum in f32")
    if raw["dma_queues"] > 16:
        raise ArchError("arch key 'dma_queues' cannot exceed 16 (the ISA's DMA queues)")
    if raw["hbm"]["size_bytes"] > 2**40:
        raise ArchError("arch key 'hbm.size_bytes' larger than 1 TiB is not supported")
    # a .xpu file carries its arch, so these bound what a hostile file can make a run allocate
    for mem in ("sbuf", "psum"):
        if raw[mem]["partitions"] * raw[mem]["bytes_per_partition"] > 2**32:
            raise ArchError(f"arch key '{mem}': partitions x bytes_per_partition above 4 GiB is not supported")


def arch_from_dict(raw: dict, source: str = "<dict>") -> Arch:
    """Validate a parsed preset (ArchError naming `source` and the bad key) and hash it."""
    try:
        _check(raw, SCHEMA, "")
        _validate_sizes(raw)
    except ArchError as exc:
        raise ArchError(f"{source}: {str(exc).replace(chr(39) + '.', chr(39))}") from None
    canonical = json.dumps(raw, sort_keys=True, separators=(",", ":")).encode()
    return Arch(raw=raw, hash=hashlib.sha256(canonical).hexdigest()[:16])


def preset_names() -> list[str]:
    """The bundled presets' names."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def load_arch(name_or_path: str | Path | None = None) -> Arch:
    """Load a preset by name (`xpu1`) or from a TOML file path."""
    if isinstance(name_or_path, Arch):
        return name_or_path
    ref = str(name_or_path or DEFAULT_ARCH)
    if (PRESET_DIR / f"{ref}.toml").is_file():
        return _load_preset(ref)
    return _load_file(ref)


@functools.lru_cache(maxsize=None)
def _load_preset(name: str) -> Arch:  # bundled presets do not change while we run
    return _load_file(str(PRESET_DIR / f"{name}.toml"))


def _load_file(ref: str) -> Arch:
    path = PRESET_DIR / f"{ref}.toml"
    if not path.is_file():
        path = Path(ref)
        if not path.is_file():
            raise ArchError(f"unknown arch {ref!r}: not a preset ({', '.join(preset_names())}) "
                            "and not a file")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ArchError(f"{path}: not valid TOML: {exc}") from None
    return arch_from_dict(raw, str(path.name))
