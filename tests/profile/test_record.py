"""`record` on the samples: the trace reads back valid, agrees with the emulator's own numbers, and
its layer/counter/flow tracks mean what docs/profile-format.md says."""
from __future__ import annotations

from collections import defaultdict

import pytest
from prof_helpers import SAMPLE_SHAPES, compiled, feeds

from device_model.arch import load_arch
from device_model.isa import ENGINES
from xputools.profile.recorder import record
from xputools.profile.trace_validate import read_trace
from xputools.runtime import run_program

NAMES = list(SAMPLE_SHAPES)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    out = {}
    base = tmp_path_factory.mktemp("recorded")
    for name in NAMES:
        program = compiled(name)
        result = record(program, feeds(program), base / f"{name}.pftrace", flows=True, source=f"{name}.onnx")
        plain = run_program(program, feeds(program)).result   # no observer attached
        out[name] = (program, result, read_trace(result.trace_path), plain)
    return out


@pytest.mark.parametrize("name", NAMES)
def test_trace_reads_back_valid(recorded, name):
    _, result, trace, _ = recorded[name]
    assert trace.problems == []
    assert result.status == "complete"
    assert trace.dropped == 0 and result.dropped == 0
    # declared before use, closed, nested, monotonic, interned ids defined, flows paired: the
    # validator reports every such problem, and the counts agree with what the writer wrote
    assert len(trace.slices) == result.trace.slices
    assert len(trace.flows) == result.trace.flows > 0


@pytest.mark.parametrize("name", NAMES)
def test_engine_tracks_match_the_emulator(recorded, name):
    program, result, trace, plain = recorded[name]
    clock = load_arch(program.arch_name).clock_ghz
    root = next(iter(trace.tracks))          # the first track declared is the device root
    engine_tracks = [t for t in trace.children(root) if t.name in ENGINES]
    # one track per engine that ran something, in the ISA's fixed order
    assert [t.name for t in engine_tracks] == [e for e in ENGINES if e in plain.busy]
    by_track = defaultdict(list)
    for s in trace.slices:
        by_track[s.track].append(s)
    for track in engine_tracks:
        slices = by_track[track.uuid]
        assert len(slices) == plain.instructions[track.name]
        assert sum(s.args["cycles"] for s in slices) == plain.busy[track.name]
        # ns endpoints are rounded cycles/clock: each duration within 1 ns of exact
        exact_ns = plain.busy[track.name] / clock
        assert abs(sum(s.dur for s in slices) - exact_ns) <= len(slices)
        issues = {(r.engine, r.index): r.issue for r in result.profile.instrs}
        for s in slices:
            assert s.ts == int(issues[(track.name, s.args["pc"])] / clock + 0.5)
            assert s.name == program.streams()[track.name][s.args["pc"]].op
    last_end = max(s.ts + s.dur for s in trace.slices)
    assert last_end == int(plain.cycles / clock + 0.5)
    assert result.profile.meta["cycles"] == plain.cycles


@pytest.mark.parametrize("name", ["cnn", "transformer"])
def test_slice_args_name_the_onnx_node(recorded, name):
    program, _, trace, _ = recorded[name]
    origins = {o.name: o.op_type for o in program.origins}
    engine_uuids = {t.uuid for t in trace.tracks.values() if t.name in ENGINES}
    for s in trace.slices:
        if s.track not in engine_uuids:
            continue
        assert origins[s.args["node"]] == s.args["op_type"]
        ins = program.streams()[trace.tracks[s.track].name][s.args["pc"]]
        for operand, ap in ins.operands.items():  # the assembly spelling, offset as its own number
            assert s.args[operand + "_offset"] == ap.offset
            assert str(ap) == s.args[operand].replace("{", f"@{hex(ap.offset)}{{", 1)
        assert s.args["wait_cycles"] >= 0 and s.args["cycles"] > 0
        if ins.op == "dma_copy":
            assert s.args["bytes"] == ins.operands["dst"].nbytes and "flops" not in s.args
        if ins.op == "matmul":
            k, m = ins.operands["stat"].shape[0], ins.operands["stat"].free_size
            assert s.args["flops"] == 2 * k * m * ins.operands["mov"].free_size
        sync = {k: v for k, v in s.args.items() if k.startswith(("wait s", "signal s"))}
        assert sync == {**{f"wait s{sem} >=": v for sem, v in ins.waits},
                        **{f"signal s{sem} +=": v for sem, v in ins.signals}}


@pytest.mark.parametrize("name", ["mlp", "cnn", "transformer", "lstm"])
def test_layer_slices_cover_their_instructions(recorded, name):
    program, result, trace, _ = recorded[name]
    layers = trace.track_named("layers")
    lanes = {t.uuid for t in trace.children(layers.uuid)}
    spans = {}
    for s in trace.slices:
        if s.track in lanes:
            assert s.name not in spans, "each ONNX node gets one layer slice"
            spans[s.name] = (s.ts, s.ts + s.dur)
    engine_uuids = {t.uuid for t in trace.tracks.values() if t.name in ENGINES}
    covered = 0
    for s in trace.slices:
        if s.track in engine_uuids and "node" in s.args:
            lo, hi = spans[s.args["node"]]
            assert lo <= s.ts and s.ts + s.dur <= hi
            covered += 1
    assert covered == len([s for s in trace.slices if s.track in engine_uuids])
    # overlapping layers sit on different lanes: slices on one lane never overlap
    for lane in lanes:
        on_lane = sorted((s.ts, s.ts + s.dur) for s in trace.slices if s.track == lane)
        assert all(a[1] <= b[0] for a, b in zip(on_lane, on_lane[1:]))
    assert len(spans) == len({r.layer for r in result.profile.selected})


def test_flows_link_a_signal_to_the_wait_it_releases(recorded):
    program, _, trace, _ = recorded["transformer"]
    slices = {(s.track, s.ts): s for s in trace.slices}
    streams = program.streams()
    assert trace.flows
    for flow in trace.flows:
        src, dst = slices[(flow.src_track, flow.src_ts)], slices[(flow.dst_track, flow.dst_ts)]
        signaller = streams[trace.tracks[src.track].name][src.args["pc"]]
        waiter = streams[trace.tracks[dst.track].name][dst.args["pc"]]
        assert {s for s, _ in signaller.signals} & {s for s, _ in waiter.waits}
        # the releasing instruction completed no later than the waiter issued
        assert src.ts + src.dur <= dst.ts


@pytest.mark.parametrize("name", ["cnn", "transformer"])
def test_counters(recorded, name):
    program, result, trace, _ = recorded[name]
    arch = load_arch(program.arch_name)
    sbuf = [c.value for c in trace.counters_on("SBUF in use")]
    psum = [c.value for c in trace.counters_on("PSUM in use")]
    hbm = [c.value for c in trace.counters_on("HBM bandwidth")]
    assert max(sbuf) > 0 and min(sbuf) >= 0 and sbuf[-1] == 0
    assert max(psum) > 0 and max(psum) <= arch.raw["psum"]["partitions"] * arch.psum_bytes
    assert max(hbm) > 0 and max(hbm) <= arch.raw["hbm"]["bandwidth_gbps"] * 1.0001
    # bytes over the windows add up to the HBM bytes the DMAs moved
    width_ns = (trace.counters_on("HBM bandwidth")[1].ts - trace.counters_on("HBM bandwidth")[0].ts)
    moved = sum(r.hbm_bytes for r in result.profile.selected if r.instr.op == "dma_copy")
    assert sum(hbm[:-1]) * width_ns == pytest.approx(moved, rel=0.05)
    semaphores = trace.children(trace.track_named("semaphores").uuid)
    signalled = {s for ins in program.instrs for s, _ in ins.signals}
    assert {int(t.name[1:]) for t in semaphores} == signalled


def test_metadata_names_model_arch_precision_and_tool(recorded):
    _, result, trace, _ = recorded["cnn"]
    meta = trace.metadata
    assert meta["model"] == "cnn" and meta["arch"] == "xpu1" and meta["precision"] == "fp32"
    assert meta["writer"].startswith("xputools ") and meta["trace_format"] == 1
    assert meta["profile_db"] == result.db_path.name and meta["clock_ghz"] == pytest.approx(1.4)


def test_critical_path_spans_the_run(recorded):
    for name in NAMES:
        _, result, _, plain = recorded[name]
        steps = result.profile.critical_path
        assert steps[0].via == "start"
        assert sum(s.end - s.start + s.gap for s in steps) + steps[0].start == plain.cycles
        for a, b in zip(steps, steps[1:]):
            assert a.end <= b.start
            assert b.via == "engine" or b.via.startswith("s")


def test_no_flows_unless_asked_and_recording_is_deterministic(tmp_path):
    program = compiled("mlp")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = record(program, feeds(program), tmp_path / "a" / "mlp.pftrace")
    b = record(program, feeds(program), tmp_path / "b" / "mlp.pftrace")
    assert read_trace(a.trace_path).flows == []
    assert a.trace_path.read_bytes() == b.trace_path.read_bytes()
    gz = record(program, feeds(program), tmp_path / "c.pftrace.gz", gzip=True)
    assert gz.trace_path.read_bytes()[:2] == b"\x1f\x8b"
    assert len(read_trace(gz.trace_path).slices) == len(read_trace(a.trace_path).slices)


def test_layer_window_captures_only_those_nodes(tmp_path):
    program = compiled("transformer")
    names = [o.name for o in program.origins]
    full = record(program, feeds(program), tmp_path / "full.pftrace")
    part = record(program, feeds(program), tmp_path / "part.pftrace", layers="3:5")
    trace = read_trace(part.trace_path)
    assert trace.problems == []
    nodes = {s.args["node"] for s in trace.slices if "node" in s.args}
    with_work = {names[ins.dbg] for ins in program.instrs if 3 <= ins.dbg <= 5}   # a Reshape may emit nothing
    assert nodes == with_work and len(with_work) >= 2
    assert {st.name for st in part.profile.layers} == with_work
    # everything still ran: same latency as the whole capture
    assert part.profile.meta["cycles"] == full.profile.meta["cycles"]
    by_name = record(program, feeds(program), tmp_path / "named.pftrace", layers=f"{names[3]}:{names[5]}")
    assert [r.id for r in by_name.profile.selected] == [r.id for r in part.profile.selected]
    single = record(program, feeds(program), tmp_path / "one.pftrace", layers=names[3])
    assert {st.name for st in single.profile.layers} == {names[3]}


def test_max_slices_drops_are_counted_and_marked(tmp_path):
    program = compiled("cnn")
    result = record(program, feeds(program), tmp_path / "capped.pftrace", max_slices=20, flows=True)
    trace = read_trace(result.trace_path)
    assert trace.problems == []
    engine_slices = [s for s in trace.slices if trace.tracks[s.track].name in ENGINES]
    assert len(engine_slices) == 20
    assert result.dropped == trace.dropped == len(program.instrs) - 20
    # the earliest instructions are the ones kept
    written = {(trace.tracks[s.track].name, s.args["pc"]) for s in engine_slices}
    last_kept = max(r.issue for r in result.profile.selected if (r.engine, r.index) in written)
    assert all(r.issue >= last_kept for r in result.profile.selected if (r.engine, r.index) not in written)
