"""`xpu arch list|show`: the architecture presets and their derived peaks."""
from __future__ import annotations

import json

import click

from ..clikit import XpuGroup, debug_option


@click.group(cls=XpuGroup)
def arch() -> None:
    """Architecture presets."""


@arch.command("list")
def arch_list() -> None:
    """List the bundled presets.

    \b
    Example:
      xpu arch list
    """
    from device_model.arch import load_arch, preset_names

    for name in preset_names():
        click.echo(f"{name:12s} {load_arch(name).raw['description']}")


@arch.command("show")
@click.argument("name", required=False, default="xpu1")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@debug_option
def arch_show(name: str, as_json: bool) -> None:
    """Print a preset (by NAME or TOML FILE) with its derived peaks.

    \b
    Examples:
      xpu arch show
      xpu arch show xpu1-edge --json
      xpu arch show my-variant.toml
    """
    from device_model.arch import load_arch

    desc = load_arch(name).describe()
    click.echo(json.dumps(desc, indent=2) if as_json else render_arch(desc))


def _flatten(prefix: str, value, rows: list[tuple[str, str]]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else k, v, rows)
    else:
        rows.append((prefix, str(value)))


def render_arch(desc: dict) -> str:
    """`Arch.describe()` as text: every preset key, then the derived peaks."""
    rows: list[tuple[str, str]] = []
    _flatten("", desc["preset"], rows)
    width = max(len(k) for k, _ in rows)
    d = desc["derived"]
    lines = [f"{desc['name']} — {desc['description']} (hash {desc['hash']})", ""]
    lines += [f"  {k:<{width}}  {v}" for k, v in rows]
    lines += ["", "derived:"]
    lines.append("  peak TFLOP/s   " + "  ".join(f"{k} {v:g}" for k, v in d["peak_tflops"].items()))
    lines.append(f"  HBM            {d['hbm_gbps']:g} GB/s")
    lines.append(f"  SBUF           {d['sbuf_mib']:g} MiB    PSUM {d['psum_kib']:g} KiB")
    lines.append("  ridge FLOP/B   " + "  ".join(f"{k} {v:g}" for k, v in d["ridge_flop_per_byte"].items()))
    return "\n".join(lines)


def register(root: click.Group) -> None:
    """Attach `xpu arch` to the root."""
    root.add_command(arch)
