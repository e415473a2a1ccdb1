"""The debugger core driven directly (no terminal): breakpoints, conditions and ignore counts,
one-engine stepping, watchpoints checked against the program text, reverse execution, post-mortem."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from device_model.assembly import assemble
from device_model.dtypes import itemsize
from xputools.debug import DebugError, Debugger

GEMM = Path("samples/programs/gemm512.xasm")


def gemm_debugger(seed=0, **kw) -> Debugger:
    prog = assemble(GEMM.read_text(), str(GEMM))
    rng = np.random.default_rng(seed)
    feeds = {t.name: rng.standard_normal(t.shape).astype(np.float32) for t in prog.inputs()}
    return Debugger(prog, feeds, **kw)


def stops(dbg: Debugger, first) -> list[tuple[str, int]]:
    out, stop = [], first
    while stop.reason in ("breakpoint", "watchpoint"):
        out.append((stop.engine, stop.index))
        stop = dbg.cont()
    assert stop.reason == "exited"
    return out


def test_breakpoint_by_index_stops_before_the_instruction_issues():
    dbg = gemm_debugger()
    bp = dbg.break_("pe:3")
    stop = dbg.run()
    assert (stop.reason, stop.engine, stop.index, stop.phase) == ("breakpoint", "pe", 3, "issue")
    assert stop.hits[0].number == bp.number and bp.hits == 1
    view = dbg.machine.engine("pe")
    assert view.pc == 3 and not view.in_flight and view.last_retired == 2
    assert dbg.cont().reason == "exited"


def test_breakpoint_by_label_node_and_opcode():
    dbg = gemm_debugger()
    dbg.break_("mm_tile1")
    assert stops(dbg, dbg.run()) == [("pe", 4)]
    dbg.delete()
    dbg.break_("node evacuate")  # a node stops once: when its first instruction issues
    assert stops(dbg, dbg.run()) == [("act", 0)]
    dbg.delete()
    dbg.break_("node ev*")
    assert len(stops(dbg, dbg.run())) == 1
    dbg.delete()
    dbg.break_("op activate")
    assert stops(dbg, dbg.run()) == [("act", i) for i in range(4)]


def test_condition_and_ignore_count():
    dbg = gemm_debugger()
    dbg.break_("op matmul", condition="index == 5 or index == 9")
    assert stops(dbg, dbg.run()) == [("pe", 5), ("pe", 9)]
    dbg.delete()
    bp = dbg.break_("op matmul")
    dbg.ignore(bp.number, 3)
    stop = dbg.run()
    assert (stop.engine, stop.index) == ("pe", 3)
    dbg.condition(bp.number, "s2 >= 2")  # pe signals s2 after each 4th matmul
    assert dbg.cont().index == 8


def test_bad_locations_and_conditions_are_one_line_errors():
    dbg = gemm_debugger()
    for bad in ("pe:99", "nosuchlabel", "node nothing*", "op frobnicate", "xyz:1"):
        with pytest.raises(DebugError):
            dbg.break_(bad)
    with pytest.raises(DebugError, match="not allowed"):
        dbg.break_("pe:1", condition="__import__('os')")
    with pytest.raises(DebugError, match="not being run"):
        dbg.stepi()


def test_stepi_on_one_engine_leaves_the_other_pcs_unchanged():
    dbg = gemm_debugger()
    dbg.break_("pe:1")
    dbg.run()
    before = {e.view.name: (e.view.pc, e.view.in_flight) for e in dbg.info_engines()}
    dbg.set_focus("pe")
    stop = dbg.stepi(2)
    assert (stop.reason, stop.engine, stop.index) == ("step", "pe", 2)
    after = {e.view.name: (e.view.pc, e.view.in_flight) for e in dbg.info_engines()}
    assert after.pop("pe")[0] == 3 and before.pop("pe")[0] == 1
    assert after == before
    # act waits on pe's s2: with pe frozen, stepping act says who would have to signal
    dbg.set_focus("act")
    stop = dbg.stepi()
    assert stop.reason == "blocked" and "s2 >= 1" in stop.message and "pe" in stop.message


def _written_by_text(program, space, pstart, pcount, lo, hi) -> set[tuple[str, int]]:
    """Instructions whose destination touches the range, from the program text alone (these
    patterns are dense: their bytes are offset .. offset + elements*itemsize)."""
    out = set()
    for engine, stream in program.streams().items():
        for i, ins in enumerate(stream):
            dst = ins.operands.get("dst")
            if dst is None or dst.space != space:
                continue
            elements = int(np.prod([c for _, c in dst.dims]))
            span = sum((c - 1) * st for st, c in dst.dims) + 1
            assert span == elements  # dense
            first, end = dst.offset, dst.offset + elements * itemsize(dst.dtype)
            if first < hi and lo < end and dst.pstart < pstart + pcount and pstart < dst.pstart + dst.pcount:
                out.add((engine, i))
    return out


@pytest.mark.parametrize("expr, rng", [
    ("sbuf[0:+128]@0x0{1:512}:bf16", ("sbuf", 0, 128, 0, 1024)),          # B k-tile 0 (written once)
    ("sbuf[0:+128]@0x1000{1:256}:bf16", ("sbuf", 0, 128, 0x1000, 0x1200)),  # stationary buffers
    ("sbuf[64:+2]@0x2000{1:16}:f32", ("sbuf", 64, 2, 0x2000, 0x2040)),      # part of an out buffer
])
def test_watchpoint_stops_at_exactly_the_instructions_that_write_it(expr, rng):
    dbg = gemm_debugger()
    expected = _written_by_text(dbg.program, *rng)
    assert expected
    dbg.watch(expr)
    hits = stops(dbg, dbg.run())
    assert sorted(hits) == sorted(expected) and len(hits) == len(expected)


def test_watchpoint_reports_old_and_new_values():
    dbg = gemm_debugger()
    dbg.watch("sbuf[0:+128]@0x2000{1:512}:f32")
    stop = dbg.run()
    (hit,) = stop.hits
    assert (hit.engine, hit.index, hit.node, hit.access) == ("act", 0, "evacuate", "w")
    assert not np.asarray(hit.old).any()
    np.testing.assert_array_equal(hit.new, dbg.print_("sbuf[0:+128]@0x2000{1:512}:f32").array)


def _state(dbg: Debugger):
    m = dbg.machine
    s = m.snapshot()
    return (s.time, s.sem, s.pending, s.busy_cycles, s.completed, s.engines, s.announced,
            m.memory.hbm.tobytes(), m.memory.sbuf.tobytes(), m.memory.psum.tobytes(), dbg.point)


@pytest.mark.parametrize("interval", [3, 400])
def test_reverse_stepi_after_n_stepi_is_bit_identical(interval):
    dbg = gemm_debugger(interval=interval)
    dbg.break_("pe:2")
    dbg.run()
    dbg.set_focus("pe")
    states = [_state(dbg)]
    for _ in range(5):
        dbg.stepi()
        states.append(_state(dbg))
    for n in range(5, 0, -1):
        dbg.reverse_stepi()
        assert _state(dbg) == states[n - 1]
    # and forward again along the same history
    dbg.stepi(5)
    assert _state(dbg) == states[5]


def test_reverse_stepi_in_a_free_run_returns_to_the_same_state():
    dbg = gemm_debugger(interval=4)
    dbg.set_focus("act")
    dbg.break_("act:2")
    dbg.run()
    seen = _state(dbg)
    dbg.stepi()  # act:2 retires (frozen step)
    dbg.reverse_stepi()
    assert _state(dbg) == seen


def test_reverse_continue_to_a_watchpoint_finds_the_last_writer():
    expr = "psum[0:+128]@0x0{1:512}:f32"  # PSUM bank 0: written by pe 0..3 and pe 8..11
    dbg = gemm_debugger(interval=5)
    order = []
    dbg.watch(expr)
    stop = dbg.run()
    while stop.reason == "watchpoint":
        order.append((stop.engine, stop.index))
        stop = dbg.cont()
    assert stop.reason == "exited" and order == [("pe", i) for i in (0, 1, 2, 3, 8, 9, 10, 11)]
    back = dbg.reverse_continue()
    assert (back.reason, back.engine, back.index) == ("watchpoint", "pe", 11)
    (hit,) = back.hits
    np.testing.assert_array_equal(hit.new, dbg.print_(expr).array)
    assert dbg.reverse_continue().index == 10
    assert dbg.machine.engine("pe").last_retired == 10  # stopped right after pe:10 wrote
    while (s := dbg.reverse_continue()).reason == "watchpoint":
        pass
    assert s.reason == "reverse-start" and dbg.point == (0, 0)


def test_reverse_continue_fires_breakpoints_backwards_and_reverse_finish():
    dbg = gemm_debugger(interval=7)
    dbg.break_("act:1")
    dbg.run()
    assert dbg.cont().reason == "exited"
    back = dbg.reverse_continue()
    assert (back.reason, back.engine, back.index, back.phase) == ("breakpoint", "act", 1, "issue")
    dbg.delete()
    dbg.set_focus("pe")
    dbg.until("pe:6")
    back = dbg.reverse_finish()  # pe's current node (gemm) started at pe:0
    assert dbg.machine.engine("pe").pc == 0 and back.reason == "step"


def test_next_and_finish_follow_onnx_nodes():
    dbg = gemm_debugger()
    dbg.start()
    dbg.set_focus("dma4")
    stop = dbg.next()  # dma4's first instruction is a load; the next node on dma4 is... none: runs to end
    assert stop.reason in ("step", "exited")
    dbg.start()
    dbg.set_focus("pe")
    dbg.until("pe:0")
    stop = dbg.finish()  # gemm retired everywhere
    assert stop.reason == "step" and dbg.machine.engine("pe").state == "DONE"
    assert dbg.machine.engine("act").state != "DONE"


def test_fault_stops_post_mortem_at_the_faulting_instruction():
    prog = assemble(Path("samples/programs/out_of_bounds.xasm").read_text(), "oob.xasm")
    dbg = Debugger(prog, {"x": np.ones((128, 64), np.float32)})
    stop = dbg.run()
    assert (stop.reason, stop.engine, stop.index) == ("fault", "dve", 0)
    assert "out of bounds" in stop.message
    assert dbg.print_("x").array.shape == (128, 64)  # memory is still there to inspect
    with pytest.raises(DebugError, match="faulted"):
        dbg.cont()
    assert dbg.reverse_stepi(all_engines=True).reason == "step" and dbg.point == (0, 0)


def test_hang_stops_with_the_wait_for_graph():
    prog = assemble(Path("samples/programs/deadlock.xasm").read_text(), "deadlock.xasm")
    dbg = Debugger(prog)
    stop = dbg.run()
    assert stop.reason == "hang"
    info = dbg.info_hang()
    assert info.hung and info.report.cycle in (["pe", "act"], ["act", "pe"])
    assert info.no_producer_left == []  # every wait still has a (blocked) producer: a cycle
    blocked = {b.engine: b for b in info.report.blocked}
    assert blocked["dma0"].signallers[1] == ["act"]


def test_compiled_model_tensor_print_watch_and_dump(tmp_path):
    from xputools.compiler.driver import compile_model
    from xputools.runtime import read_npz

    prog = compile_model("samples/mlp.onnx").program
    dbg = Debugger(prog, read_npz(Path("samples/mlp.inputs.npz")))
    tap = next(t for t in prog.taps if t.pieces and t.after_engine)
    wp = dbg.watch(tap.name)
    stop = dbg.run()
    assert stop.reason == "watchpoint" and stop.hits[0].number == wp.number
    dbg.delete()
    dbg.cont()
    value = dbg.print_(tap.name)
    assert value.note == "" and value.array.shape == tuple(tap.shape)
    out = tmp_path / "t.npy"
    dbg.dump(tap.name, str(out))
    np.testing.assert_array_equal(np.load(out), value.array)
    with pytest.raises(DebugError, match="exists"):
        dbg.dump(tap.name, str(out))
    dbg.dump(tap.name + "[0]", str(out), force=True)
    assert np.load(out).shape == tuple(tap.shape[1:])
    frames = dbg.backtrace()
    assert [f.kind for f in frames] == ["instruction", "kernel", "node", "model"]


def test_info_hang_names_a_wait_with_no_producer_left():
    from device_model.isa import AP, Instr
    from device_model.program import Program

    sb = lambda off: AP("sbuf", off, ((1, 8),), "f32", 0, 128)  # noqa: E731
    prog = Program(gemm_debugger().program.arch, [
        Instr("dve", "memset", {"dst": sb(0)}, {"value": 1.0}, waits=((5, 2),)),
        Instr("act", "activate", {"dst": sb(64), "src": sb(128)}, signals=((5, 1),))])
    dbg = Debugger(prog)
    assert dbg.run().reason == "hang"
    info = dbg.info_hang()
    assert info.hung and info.no_producer_left == [("dve", 5)]


def test_rwatch_stops_at_the_readers_and_awatch_at_both():
    dbg = gemm_debugger()
    expr = "psum[0:+128]@0x800{1:512}:f32"  # bank 1: pe writes it (and reads it when accumulating), act reads it
    dbg.rwatch(expr)
    readers = [("pe", i) for i in (5, 6, 7, 13, 14, 15)] + [("act", 1), ("act", 3)]
    assert sorted(stops(dbg, dbg.run())) == sorted(readers)
    dbg.delete()
    dbg.awatch(expr)
    hits = stops(dbg, dbg.run())
    assert [h for h in hits if h[0] == "act"] == [("act", 1), ("act", 3)]
    assert sorted(h for h in hits if h[0] == "pe") == [("pe", i) for i in (4, 5, 6, 7, 12, 13, 14, 15)]


def test_history_stays_within_its_budget_and_reverse_still_exact():
    probe = gemm_debugger(interval=2)
    probe.run()
    full = probe.history.bytes  # every snapshot kept
    dbg = gemm_debugger(interval=2, budget_bytes=full // 2)
    dbg.break_("act:3")
    dbg.run()
    h = dbg.info_history()
    assert h.interval > 2 and h.snapshots < len(probe.history.snaps)
    assert dbg.history.bytes <= full // 2 or len(dbg.history.snaps) <= 2
    dbg.set_focus("act")
    before = _state(dbg)
    dbg.stepi()
    dbg.reverse_stepi()
    assert _state(dbg) == before


def test_same_program_same_inputs_same_stops():
    def session():
        dbg = gemm_debugger(seed=7, interval=3)
        dbg.break_("op activate")
        dbg.watch("psum[0:+128]@0x800{1:512}:f32")
        out = [dbg.run()]
        dbg.set_focus("pe")
        out += [dbg.stepi(), dbg.tick(500), dbg.cont(), dbg.reverse_continue(), dbg.cont(2), dbg.reverse_stepi()]
        return [(s.reason, s.point, s.time, s.engine, s.index) for s in out], dbg.machine.memory.sbuf.tobytes()

    first, second = session(), session()
    assert first == second


def test_tick_runs_every_engine_for_n_cycles():
    dbg = gemm_debugger()
    dbg.start()
    stop = dbg.tick(3000)
    assert stop.reason == "step" and stop.time >= 3000
    assert dbg.machine.retired == stop.point[0] > 0


def test_node_breakpoint_by_the_name_of_a_node_replaced_by_its_function_body():
    """Elu runs on the device as its ONNX function body (nodes 'e1/...'): `break node e1` still finds it."""
    from onnx import TensorProto, helper

    from xputools.compiler.context import CompileOptions
    from xputools.compiler.driver import compile_model

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"], name="r1"), helper.make_node("Elu", ["r"], ["y"], name="e1")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    program = compile_model(model, CompileOptions()).program
    assert not program.host_ops and "e1" not in {o.name for o in program.origins}
    feeds = {"x": np.random.default_rng(3).standard_normal((4, 8)).astype(np.float32)}
    dbg = Debugger(program, feeds)
    dbg.break_("node e1")
    stop = dbg.run()
    assert stop.reason == "breakpoint"
    assert program.origins[dbg.machine.instr(stop.engine, stop.index).dbg].name.startswith("e1/")
    with pytest.raises(DebugError, match="no node matches"):
        dbg.break_("node e")  # a prefix of a name is not a match: only whole path segments
