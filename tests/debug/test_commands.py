"""The command interpreter over the core: tbreak, commands blocks, display, x/FMT, errors as data."""
from __future__ import annotations

import numpy as np

from tests.debug.test_debugger import gemm_debugger
from xputools.debug.commands import Commands
from xputools.debug.render import render


def run(cmds: Commands, *lines):
    out = []
    for line in lines:
        result = cmds.execute(line)
        if result is not None:
            out.append(result)
    return out


def test_tbreak_commands_block_and_display():
    cmds = Commands(gemm_debugger())
    results = run(cmds, "tbreak act:1", "commands", "print s3", "info engines", "end", "display s2", "run")
    stop = results[-1]
    assert stop.ok and stop.data.reason == "breakpoint" and (stop.data.engine, stop.data.index) == ("act", 1)
    assert [f.command for f in stop.followups] == ["print", "info"]
    assert stop.followups[0].data.array == 1  # act:0 signalled s3 once
    assert stop.data.displays[0][1] == "s2"
    assert not cmds.dbg.breakpoints  # temporary: gone after it stopped the program
    text = render(stop)
    assert "Breakpoint 1, act:1 [evacuate]" in text and "s3 = 1" in text and any(t.startswith("1: s2") for t in text)


def test_examine_formats_and_errors_are_results_not_exceptions():
    cmds = Commands(gemm_debugger())
    (_, x, bad, bad2, unknown) = run(cmds, "run", "x/4xw sbuf[0:+2]@0x0", "x/4qz sbuf@0",
                                     "print sbuf[0:+999]@0x0{1:4}:f32", "reverse-frobnicate")
    assert x.ok and x.data.array.shape == (2, 4) and x.data.array.dtype == np.uint32
    assert render(x)[1].startswith("[[0x")
    assert not bad.ok and "bad format" in bad.error
    assert not bad2.ok and "partitions" in bad2.error
    assert not unknown.ok and unknown.error.startswith("unknown command")


def test_info_memory_and_queues_after_a_stop():
    cmds = Commands(gemm_debugger())
    (_, mem, queues) = run(cmds, "break act:0", "run", "info memory", "info queues")[1:]
    spaces = {r.space for r in mem.data}
    assert "psum" in spaces  # PE wrote bank 0, ACT is about to read it
    assert all(q.view.name.startswith("dma") for q in queues.data)
