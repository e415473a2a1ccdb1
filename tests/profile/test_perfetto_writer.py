"""TraceWriter (native Perfetto protobuf traces) and the protobuf-only reader/validator."""
from __future__ import annotations

import gzip

import numpy as np
import pytest
from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb

from xputools.errors import UserError
from xputools.profile import perfetto_writer
from xputools.profile.perfetto_writer import (
    DROPPED_EVENT_NAME,
    INCREMENTAL_CLOCK_ID,
    METADATA_EVENT_NAME,
    TraceWriter,
    TraceWriterError,
)
from xputools.profile.trace_validate import read_metadata, read_trace, validate_trace

BEGIN, END = pb.TrackEvent.TYPE_SLICE_BEGIN, pb.TrackEvent.TYPE_SLICE_END
INSTANT, COUNTER = pb.TrackEvent.TYPE_INSTANT, pb.TrackEvent.TYPE_COUNTER
CLEARED = pb.TracePacket.SEQ_INCREMENTAL_STATE_CLEARED
META = {"model": "resnet18.onnx", "arch": "xpu1", "precision": "bf16", "batch": 4}
SRC = ("resnet18.onnx", "/layer1/conv1/Conv", 7)


def write_sample(path, **kwargs):
    """Several tracks (one nested under another), nested slices, args of every type, counters, flows."""
    with TraceWriter(path, metadata=META, **kwargs) as w:
        pe = w.add_track("PE")
        dma = w.add_track("DMA q0")
        layers = w.add_track("layers", rank=-1)               # shown first despite being declared later
        sub = w.add_track("PE detail", parent=pe)
        sbuf = w.add_counter_track("SBUF used", unit="bytes")
        bw = w.add_counter_track("HBM bandwidth", unit="GB/s")
        w.add_slice(layers, 0, 1_000_000, "layer1", {"op_type": "Conv"})
        w.add_slice(layers, 10, 400_000, "conv1", {"node": "/layer1/conv1/Conv"})   # nested in layer1
        w.add_slice(dma, 100, 900, "dma hbm->sbuf", {"bytes": 65536, "queue": "q0"}, flow_out=1)
        w.add_slice(pe, 1_000, 5_000, "matmul bf16",
                    {"pc": 3, "flops": 1 << 40, "scale": 0.125, "acc": True, "offset": -12,
                     "mask": (1 << 64) - 1, "dtype": "bf16"},
                    flow_in=1, source=SRC)
        w.add_slice(pe, 1_500, 1_000, "load_weights", {"pc": 4}, source=SRC)         # nested in matmul
        w.add_slice(pe, 6_000, 20, "matmul bf16", {"pc": 5, "dtype": "bf16"}, source=SRC)
        w.add_slice(sub, 2_000, 100, "psum bank 3")
        w.add_instant(pe, 7_000, "semaphore 2 signalled", {"value": 1})
        for i, ts in enumerate(range(0, 10_000, 1_000)):
            w.add_counter(sbuf, ts, i * 4096)
            w.add_counter(bw, ts, 100.5 + i)
        w.add_counter(sbuf, 20_000, -1)
    return w.close()


@pytest.fixture
def sample(tmp_path):
    path = tmp_path / "sample.pftrace"
    stats = write_sample(path)
    return path, stats, read_trace(path)


def raw_packets(path):
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return list(pb.Trace.FromString(data).packet)


def write_packets(path, packets):
    path.write_bytes(pb.Trace(packet=packets).SerializeToString())
    return path


# ------------------------------------------------------------------------------ round trip
def test_round_trip_tracks_slices_args_counters_flows(sample):
    _, stats, model = sample
    assert model.problems == []
    assert (stats.slices, stats.instants, stats.counters, stats.flows, stats.dropped) == (7, 2, 21, 1, 0)

    root = model.children(None)
    assert [t.name for t in root] == ["XPU device"]
    assert [t.name for t in model.children(root[0].uuid)] == [
        "layers", "PE", "DMA q0", "SBUF used", "HBM bandwidth"]
    pe = model.track_named("PE")
    assert [t.name for t in model.children(pe.uuid)] == ["PE detail"]
    assert model.track_named("SBUF used").is_counter and model.track_named("SBUF used").unit == "bytes"
    assert model.track_named("HBM bandwidth").unit == "GB/s"

    layers = model.slices_on("layers")
    assert [(s.name, s.ts, s.dur, s.depth) for s in layers] == [
        ("layer1", 0, 1_000_000, 0), ("conv1", 10, 400_000, 1)]
    pe_slices = model.slices_on("PE")
    assert [(s.name, s.ts, s.dur, s.depth) for s in pe_slices] == [
        ("matmul bf16", 1_000, 5_000, 0), ("load_weights", 1_500, 1_000, 1), ("matmul bf16", 6_000, 20, 0)]
    assert pe_slices[0].args == {"pc": 3, "flops": 1 << 40, "scale": 0.125, "acc": True, "offset": -12,
                                 "mask": (1 << 64) - 1, "dtype": "bf16"}
    assert pe_slices[0].source == SRC and pe_slices[2].args == {"pc": 5, "dtype": "bf16"}
    assert model.slices_on("PE detail")[0].ts == 2_000
    assert model.slices_on("DMA q0")[0].args == {"bytes": 65536, "queue": "q0"}

    assert [(c.ts, c.value) for c in model.counters_on("SBUF used")] == (
        [(ts, i * 4096) for i, ts in enumerate(range(0, 10_000, 1_000))] + [(20_000, -1)])
    assert model.counters_on("HBM bandwidth")[3].value == pytest.approx(103.5)

    [flow] = model.flows
    assert (flow.id, flow.src_track, flow.src_ts, flow.dst_track, flow.dst_ts) == (
        1, model.track_named("DMA q0").uuid, 100, pe.uuid, 1_000)
    [semaphore] = [i for i in model.instants if i.track == pe.uuid]
    assert (semaphore.name, semaphore.ts, semaphore.args) == ("semaphore 2 signalled", 7_000, {"value": 1})


def test_metadata_is_readable_in_the_ui_and_by_read_metadata(sample):
    path, _, model = sample
    expected = {**META, "trace_format": 1, "writer": f"xputools {perfetto_writer.__version__}"}
    assert read_metadata(path) == expected == model.metadata
    root = model.children(None)[0]
    assert "model: resnet18.onnx" in root.description and "arch: xpu1" in root.description
    [info] = [i for i in model.instants if i.name == METADATA_EVENT_NAME]
    assert info.track == root.uuid


def test_sequences_use_interning_delta_timestamps_and_defaults(sample):
    path, _, _ = sample
    packets = raw_packets(path)
    seen_seq, names, ann_names, values = set(), {}, {}, {}
    begins = 0
    for p in packets:
        seq = p.trusted_packet_sequence_id
        assert seq, "every packet is on a trusted sequence"
        if seq not in seen_seq and not p.HasField("track_descriptor"):
            seen_seq.add(seq)
            # first packet of a sequence: clears state, sets defaults and the incremental clock
            assert p.sequence_flags & CLEARED and p.first_packet_on_sequence
            assert p.trace_packet_defaults.timestamp_clock_id == INCREMENTAL_CLOCK_ID
            assert p.trace_packet_defaults.track_event_defaults.HasField("track_uuid")
            clocks = {c.clock_id: c for c in p.clock_snapshot.clocks}
            assert clocks[INCREMENTAL_CLOCK_ID].is_incremental and pb.BUILTIN_CLOCK_BOOTTIME in clocks
        for e in p.interned_data.event_names:
            names[seq, e.iid] = e.name
        for e in p.interned_data.debug_annotation_names:
            ann_names[seq, e.iid] = e.name
        for e in p.interned_data.debug_annotation_string_values:
            values[seq, e.iid] = e.str
        if p.HasField("track_event"):
            te = p.track_event
            assert not te.HasField("track_uuid"), "the track comes from the sequence defaults"
            assert not te.HasField("name"), "names are interned"
            if te.type in (BEGIN, INSTANT):
                assert (seq, te.name_iid) in names, "interned id defined earlier on the same sequence"
                for a in te.debug_annotations:
                    assert (seq, a.name_iid) in ann_names and not a.HasField("name")
                    if a.HasField("string_value_iid"):
                        assert (seq, a.string_value_iid) in values
            begins += te.type == BEGIN
            assert p.timestamp < 1_000_000 + 1   # deltas, not absolute times
    assert begins == 7
    # the long slice ends at 1_000_000 (absolute); written as one delta from its BEGIN at 0
    layer_end = [p for p in packets if p.track_event.type == END and p.timestamp == 1_000_000 - 10 - 400_000]
    assert layer_end, "END of layer1 written as a delta from the END of conv1 (at 400_010)"


def test_hand_encoded_packets_are_what_the_protobuf_classes_write(sample, tmp_path):
    path, _, _ = sample
    data = path.read_bytes()
    # Every packet re-serialised by the protobuf classes gives back the same bytes.
    assert pb.Trace.FromString(data).SerializeToString() == data
    # And one slice's packets, built field by field with the classes, are the writer's bytes.
    with TraceWriter(tmp_path / "one.pftrace") as w:
        track = w.add_track("PE")
        w.add_slice(track, 300, 20_000, "matmul", {"node": "/a/MatMul", "pc": 20_000, "neg": -3,
                                                   "x": 1.5, "ok": False}, flow_out=9, source=SRC)
        w.add_slice(track, 20_300, 5, "matmul", {"node": "/a/MatMul", "pc": 1}, flow_in=9)
    packets = raw_packets(tmp_path / "one.pftrace")
    begin, end, begin2, _ = (p for p in packets if p.track_event.type in (BEGIN, END)
                             and p.trusted_packet_sequence_id == 2)
    expected = pb.TracePacket(timestamp=300, trusted_packet_sequence_id=2)
    te = expected.track_event
    for iid, (kind, value) in enumerate([("string_value_iid", 1), ("int_value", 20_000), ("int_value", -3),
                                         ("double_value", 1.5), ("bool_value", False)], start=1):
        te.debug_annotations.add(name_iid=iid, **{kind: value})
    te.type, te.name_iid, te.source_location_iid = BEGIN, 1, 1
    te.flow_ids.append(9)
    interned = expected.interned_data
    interned.event_names.add(iid=1, name="matmul")
    for iid, key in enumerate(["node", "pc", "neg", "x", "ok"], start=1):
        interned.debug_annotation_names.add(iid=iid, name=key)
    interned.source_locations.add(iid=1, file_name=SRC[0], function_name=SRC[1], line_number=SRC[2])
    interned.debug_annotation_string_values.add(iid=1, str=b"/a/MatMul")
    assert begin == expected
    assert begin.SerializeToString() == expected.SerializeToString()
    assert end == pb.TracePacket(timestamp=20_000, trusted_packet_sequence_id=2,
                                 track_event=pb.TrackEvent(type=END))
    expected2 = pb.TracePacket(timestamp=0, trusted_packet_sequence_id=2)
    expected2.track_event.debug_annotations.add(name_iid=1, string_value_iid=1)
    expected2.track_event.debug_annotations.add(name_iid=2, int_value=1)
    expected2.track_event.type, expected2.track_event.name_iid = BEGIN, 1
    expected2.track_event.terminating_flow_ids.append(9)
    assert begin2 == expected2


def test_gzip_output_is_deterministic_and_readable(tmp_path):
    a, b = tmp_path / "a.pftrace.gz", tmp_path / "b.pftrace.gz"
    write_sample(a)
    write_sample(b)
    assert a.read_bytes()[:2] == b"\x1f\x8b" and a.read_bytes() == b.read_bytes()
    model = read_trace(a)
    assert model.problems == [] and len(model.slices) == 7 and read_metadata(a)["arch"] == "xpu1"
    plain = tmp_path / "plain.pftrace"
    write_sample(plain)
    assert gzip.decompress(a.read_bytes()) == plain.read_bytes()


def test_packets_are_flushed_while_writing(tmp_path):
    path = tmp_path / "stream.pftrace"
    w = TraceWriter(path, flush_bytes=4096)
    track = w.add_track("PE")
    for i in range(3_000):
        w.add_slice(track, i * 10, 5, "op", {"pc": i})
    assert path.stat().st_size > 50_000          # most of it is on disk before close()
    assert len(w._out) < 4096                    # and the buffer stays small
    stats = w.close()
    assert stats.bytes == path.stat().st_size == stats.raw_bytes
    assert len(read_trace(path).slices) == 3_000


def test_max_slices_counts_drops_and_marks_them(tmp_path):
    path = tmp_path / "capped.pftrace"
    with TraceWriter(path, max_slices=3) as w:
        pe, dma = w.add_track("PE"), w.add_track("DMA")
        assert w.add_slice(dma, 0, 10, "dma", flow_out=1)
        assert w.add_slice(pe, 5, 10, "a")
        assert w.add_slice(pe, 20, 10, "b")
        assert not w.add_slice(pe, 40, 10, "c", flow_in=1)     # dropped: its flow ends at the marker
        assert not w.add_slice(dma, 50, 10, "dma", flow_out=2)  # dropped with its flow...
        assert not w.add_slice(pe, 70, 10, "d", flow_in=2)      # ...so this end is not written either
    stats = w.close()
    assert (stats.slices, stats.dropped, stats.unpaired_flows) == (3, 3, 1)
    model = read_trace(path)
    assert model.problems == [] and model.dropped == 3 and len(model.slices) == 3
    [marker] = [i for i in model.instants if i.name == DROPPED_EVENT_NAME]
    assert marker.args == {"dropped_slices": 3, "max_slices": 3} and marker.ts == 30
    assert [f.id for f in model.flows] == [1]


def test_interning_tables_stop_growing_at_the_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(perfetto_writer, "MAX_INTERNED_PER_SEQUENCE", 4)
    path = tmp_path / "limit.pftrace"
    with TraceWriter(path) as w:
        track = w.add_track("PE")
        for i in range(10):
            w.add_slice(track, i * 10, 5, f"op{i}", {f"k{i}": f"v{i}"}, source=("m", f"n{i % 2}", 1))
    model = read_trace(path)
    assert model.problems == []
    assert [(s.name, s.args, s.source) for s in model.slices] == [
        (f"op{i}", {f"k{i}": f"v{i}"}, ("m", f"n{i % 2}", 1)) for i in range(10)]
    later = [p.track_event for p in raw_packets(path) if p.track_event.type == BEGIN][-1]
    assert later.HasField("name") and later.debug_annotations[0].HasField("string_value")


# ------------------------------------------------------------------------------ add_slices
def test_add_slices_writes_what_add_slice_writes(tmp_path):
    rng = np.random.default_rng(0)
    n = 500
    dur = rng.integers(1, 3_000, n)
    gaps = rng.integers(0, 20_000, n) * (rng.random(n) < 0.3)
    ts = np.cumsum(dur + gaps) - dur
    names = [f"op{i % 7}" for i in range(n)]
    args = {"pc": list(range(n)), "bytes": [int(x) for x in rng.choice([4096, 65536, 1 << 20], n)],
            "dtype": [("bf16", "f32")[i % 2] for i in range(n)],
            "wait_ns": [int(x) if x % 3 == 0 else None for x in rng.integers(0, 100_000, n)],
            "scale": [0.5 * i for i in range(n)]}
    sources = [("m.onnx", f"/node{i // 50}", i // 50) if i % 10 else None for i in range(n)]
    flow_in = [i if i % 100 == 0 and i else None for i in range(n)]
    by_row, by_column = tmp_path / "rows.pftrace", tmp_path / "columns.pftrace"
    for path in (by_row, by_column):
        with TraceWriter(path) as w:
            pe, dma = w.add_track("PE"), w.add_track("DMA")
            for i in range(100, n, 100):
                w.add_slice(dma, int(ts[i]) - 1, 1, "dma", flow_out=i)
            if path is by_row:
                for i in range(n):
                    w.add_slice(pe, int(ts[i]), int(dur[i]), names[i],
                                {k: col[i] for k, col in args.items() if col[i] is not None},
                                flow_in=flow_in[i], source=sources[i])
            else:
                assert w.add_slices(pe, ts, dur, names, args, sources, flow_in=flow_in) == n
            w.add_slice(pe, int(ts[-1] + dur[-1]), 10, "after")
    rows, columns = read_trace(by_row), read_trace(by_column)
    assert rows.problems == [] and columns.problems == []
    assert [(s.track, s.ts, s.dur, s.name, s.args, s.source, s.flow_in) for s in rows.slices] == [
        (s.track, s.ts, s.dur, s.name, s.args, s.source, s.flow_in) for s in columns.slices]
    assert len(rows.flows) == len(columns.flows) == 4


def test_add_slices_nests_and_limits_like_add_slice(tmp_path):
    path = tmp_path / "nested.pftrace"
    with TraceWriter(path, max_slices=3) as w:
        t = w.add_track("layers")
        # nested rows take the per-slice path; the fourth row is over max_slices
        assert w.add_slices(t, [0, 10, 20, 100], [100, 5, 5, 5], ["outer", "a", "b", "c"]) == 3
    model = read_trace(path)
    assert [(s.name, s.depth) for s in model.slices] == [("outer", 0), ("a", 1), ("b", 1)]
    assert model.dropped == 1 and model.problems == []
    with TraceWriter(tmp_path / "bad.pftrace") as w:
        t = w.add_track("t")
        with pytest.raises(TraceWriterError, match="must nest"):
            w.add_slices(t, [0, 10], [20, 20], "x")
        with pytest.raises(TraceWriterError, match="3 entries, expected 2"):
            w.add_slices(t, [100, 200], [1, 1], ["a", "b", "c"])


# ------------------------------------------------------------------------------ writer misuse
def test_misuse_raises_clear_errors(tmp_path):
    w = TraceWriter(tmp_path / "misuse.pftrace")
    pe, counter = w.add_track("PE"), w.add_counter_track("c")
    other = TraceWriter(tmp_path / "other.pftrace").add_track("X")
    w.add_slice(pe, 100, 50, "a")
    with pytest.raises(TraceWriterError, match="timestamp order"):
        w.add_slice(pe, 90, 5, "early")
    with pytest.raises(TraceWriterError, match="must nest"):
        w.add_slice(pe, 120, 100, "overlaps the end of a")
    with pytest.raises(TraceWriterError, match="negative duration"):
        w.add_slice(pe, 200, -1, "neg")
    with pytest.raises(TypeError, match="integer number of ns"):
        w.add_slice(pe, 200.5, 1, "float ts")
    with pytest.raises(TraceWriterError, match="counter track"):
        w.add_slice(counter, 300, 1, "slice on counter")
    with pytest.raises(TraceWriterError, match="slice track"):
        w.add_counter(pe, 300, 1)
    with pytest.raises(TraceWriterError, match="not a track declared on this writer"):
        w.add_slice(other, 300, 1, "foreign")
    with pytest.raises(TypeError, match="must be str, int, float or bool"):
        w.add_slice(pe, 300, 1, "bad arg", {"shape": [1, 2]})
    w.add_slice(pe, 400, 10, "receiver", flow_in=5)
    with pytest.raises(TraceWriterError, match="before it starts"):
        w.add_slice(pe, 500, 10, "late origin", flow_out=5)
    with pytest.raises(TraceWriterError, match="metadata value"):
        TraceWriter(tmp_path / "m.pftrace", metadata={"shape": (1, 2)})
    w.close()
    with pytest.raises(TraceWriterError, match="closed"):
        w.add_slice(pe, 1_000, 1, "after close")


# ------------------------------------------------------------------------------ validator
def good_sequence_start(seq=2, track=10):
    p = pb.TracePacket(trusted_packet_sequence_id=seq, sequence_flags=CLEARED, timestamp=0,
                       timestamp_clock_id=pb.BUILTIN_CLOCK_BOOTTIME)
    p.trace_packet_defaults.timestamp_clock_id = INCREMENTAL_CLOCK_ID
    p.trace_packet_defaults.track_event_defaults.track_uuid = track
    p.clock_snapshot.clocks.add(clock_id=pb.BUILTIN_CLOCK_BOOTTIME, timestamp=0)
    p.clock_snapshot.clocks.add(clock_id=INCREMENTAL_CLOCK_ID, timestamp=0, is_incremental=True)
    return p


def declare(uuid, name, counter=False):
    p = pb.TracePacket(trusted_packet_sequence_id=1)
    p.track_descriptor.uuid, p.track_descriptor.name = uuid, name
    if counter:
        p.track_descriptor.counter.SetInParent()
    return p


def event(ts, type_, track=None, seq=1, **fields):
    p = pb.TracePacket(timestamp=ts, trusted_packet_sequence_id=seq)
    p.track_event.type = type_
    if track is not None:
        p.track_event.track_uuid = track
    for key, value in fields.items():
        if key in ("flow_ids", "terminating_flow_ids"):
            getattr(p.track_event, key).extend(value)
        else:
            setattr(p.track_event, key, value)
    return p


def test_a_hand_made_plain_trace_is_valid(tmp_path):
    path = write_packets(tmp_path / "ok.pftrace", [
        declare(10, "A"), declare(11, "B"), declare(12, "C", counter=True),
        event(0, BEGIN, 10, name="x", flow_ids=[3]), event(5, END, 10),
        event(6, BEGIN, 11, name="y", terminating_flow_ids=[3]), event(9, END, 11),
        event(9, COUNTER, 12, counter_value=4)])
    model = read_trace(path)
    assert model.problems == []
    assert [(s.name, s.ts, s.dur) for s in model.slices] == [("x", 0, 5), ("y", 6, 3)]
    assert len(model.flows) == 1 and model.counters[0].value == 4


def test_validator_resolves_incremental_clock_deltas(tmp_path):
    p1 = event(100, BEGIN, seq=2, name="a")
    p2 = event(50, END, seq=2)
    path = write_packets(tmp_path / "delta.pftrace", [declare(10, "A"), good_sequence_start(), p1, p2])
    model = read_trace(path)
    assert model.problems == [] and [(s.ts, s.dur) for s in model.slices] == [(100, 50)]


@pytest.mark.parametrize("cut", [1, 7, -3])
def test_truncated_file_is_a_problem_not_an_exception(tmp_path, cut):
    good = tmp_path / "good.pftrace"
    write_sample(good)
    data = good.read_bytes()
    bad = tmp_path / "cut.pftrace"
    bad.write_bytes(data[:len(data) // 2 + cut])
    problems = validate_trace(bad)
    assert any("truncated" in p for p in problems)


def test_truncated_gzip_and_garbage_are_problems(tmp_path):
    good = tmp_path / "good.pftrace.gz"
    write_sample(good)
    bad = tmp_path / "cut.pftrace.gz"
    bad.write_bytes(good.read_bytes()[:-40])
    assert any("gzip" in p or "truncated" in p for p in validate_trace(bad))
    junk = tmp_path / "junk.pftrace"
    junk.write_bytes(b"this is not a trace at all")
    assert any("not a Perfetto trace" in p for p in validate_trace(junk))
    corrupt = write_packets(tmp_path / "corrupt.pftrace", [declare(10, "A")])
    corrupt.write_bytes(corrupt.read_bytes() + b"\x0a\x03\x5a\x10\x01")   # a packet that does not parse
    assert any("does not parse" in p for p in validate_trace(corrupt))


def test_unclosed_slice_and_end_on_another_track(tmp_path):
    unclosed = write_packets(tmp_path / "unclosed.pftrace", [
        declare(10, "A"), event(0, BEGIN, 10, name="open"), event(1, BEGIN, 10, name="inner"),
        event(2, END, 10)])
    assert any("'open' begun at 0 never ends" in p for p in validate_trace(unclosed))
    crossed = write_packets(tmp_path / "crossed.pftrace", [
        declare(10, "A"), declare(11, "B"), event(0, BEGIN, 10, name="x"), event(5, END, 11)])
    problems = validate_trace(crossed)
    assert any("track 'B': END at 5 without a BEGIN" in p for p in problems)
    assert any("track 'A': slice 'x' begun at 0 never ends" in p for p in problems)


def test_undeclared_track_and_counter_on_slice_track(tmp_path):
    path = write_packets(tmp_path / "undeclared.pftrace", [
        declare(10, "A"), event(0, BEGIN, 99, name="x"), event(1, END, 99),
        event(2, COUNTER, 10, counter_value=3)])
    problems = validate_trace(path)
    assert any("track 99 is used before any TrackDescriptor declares it" in p for p in problems)
    assert any("not a counter track" in p for p in problems)
    late = write_packets(tmp_path / "late.pftrace", [event(0, INSTANT, 10, name="x"), declare(10, "A")])
    assert any("track 10 is used before" in p for p in validate_trace(late))


def test_decreasing_timestamps_on_a_sequence(tmp_path):
    path = write_packets(tmp_path / "backwards.pftrace", [
        declare(10, "A"), declare(11, "B"), event(100, INSTANT, 10, name="x"),
        event(50, INSTANT, 11, name="y")])
    assert any("sequence 1: timestamps go backwards at packet 3 (50 < 100)" in p
               for p in validate_trace(path))


def test_undefined_interned_ids_and_missing_state_clear(tmp_path):
    start = good_sequence_start()
    start.interned_data.event_names.add(iid=1, name="defined")
    use = event(10, BEGIN, seq=2, name_iid=2)
    use.track_event.debug_annotations.add(name_iid=4, int_value=1)
    path = write_packets(tmp_path / "iid.pftrace", [declare(10, "A"), start, use, event(5, END, seq=2)])
    problems = validate_trace(path)
    assert any("interned event name iid 2" in p for p in problems)
    assert any("interned annotation name iid 4" in p for p in problems)
    uncleared = pb.TracePacket(trusted_packet_sequence_id=3)
    uncleared.interned_data.event_names.add(iid=1, name="x")
    path = write_packets(tmp_path / "uncleared.pftrace", [
        declare(10, "A"), uncleared, event(1, INSTANT, 10, seq=3, name_iid=1)])
    assert any("never set SEQ_INCREMENTAL_STATE_CLEARED" in p for p in validate_trace(path))


def test_unpaired_flows(tmp_path):
    path = write_packets(tmp_path / "flows.pftrace", [
        declare(10, "A"), event(0, INSTANT, 10, name="start only", flow_ids=[7]),
        event(1, INSTANT, 10, name="end only", terminating_flow_ids=[8]),
        event(2, INSTANT, 10, name="late start", flow_ids=[9]),
        event(3, INSTANT, 10, name="early end", terminating_flow_ids=[9])])
    problems = validate_trace(path)
    assert any("flow 7 starts at 'start only'" in p and "never ends" in p for p in problems)
    assert any("flow 8 ends at 'end only'" in p and "never starts" in p for p in problems)
    assert not any("flow 9" in p for p in problems)
    backwards = write_packets(tmp_path / "backwards_flow.pftrace", [
        declare(10, "A"), declare(11, "B"), event(5, INSTANT, 10, name="to", terminating_flow_ids=[4]),
        event(9, INSTANT, 11, seq=2, name="from", flow_ids=[4])])
    assert any("flow 4 ends (ts 5) before it starts (ts 9)" in p for p in validate_trace(backwards))


def test_reading_a_missing_or_foreign_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_trace(tmp_path / "nope.pftrace")
    junk = tmp_path / "junk.txt"
    junk.write_text("hello")
    with pytest.raises(UserError, match="not a readable Perfetto trace"):
        read_metadata(junk)
