"""Read and check Perfetto protobuf traces with the `perfetto` package's protobuf classes only.

No TraceProcessor: it downloads a binary on first use, which cannot work offline. `read_trace`
resolves what a trace processor would (sequence defaults, interned data, incremental clocks) into a
small in-memory model of tracks, slices, instants, counters and flows; `validate_trace` returns the
problems found on the way (never raises on a bad trace): a truncated or corrupt file, tracks used
before they are declared, a BEGIN without its END on the same track (or an END without a BEGIN),
timestamps going backwards within a packet sequence, interned ids used before they are defined,
flows that start without ending (or end without starting), counter samples on non-counter tracks.
Gzip'd traces are detected by their magic bytes.
"""
from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import BinaryIO, Iterator

from google.protobuf.message import DecodeError
from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb

from ..errors import UserError
from .perfetto_writer import DROPPED_EVENT_NAME, METADATA_EVENT_NAME

_BEGIN, _END = pb.TrackEvent.TYPE_SLICE_BEGIN, pb.TrackEvent.TYPE_SLICE_END
_INSTANT, _COUNTER = pb.TrackEvent.TYPE_INSTANT, pb.TrackEvent.TYPE_COUNTER
_CLEARED = pb.TracePacket.SEQ_INCREMENTAL_STATE_CLEARED
_FIRST_SEQUENCE_CLOCK, _LAST_SEQUENCE_CLOCK = 64, 127
_CHUNK = 1 << 20
_event_order = itemgetter(0, 1)   # (ts, packet index): file order breaks timestamp ties
_MAX_PROBLEMS = 200   # a badly broken trace would otherwise repeat one problem per packet


@dataclass
class TrackInfo:
    uuid: int
    name: str
    parent: int | None
    rank: int | None
    is_counter: bool
    unit: str | None = None
    description: str = ""


@dataclass
class Slice:
    track: int
    ts: int
    dur: int
    name: str | None
    args: dict
    depth: int
    source: tuple | None = None
    flow_out: tuple = ()
    flow_in: tuple = ()


@dataclass
class Instant:
    track: int
    ts: int
    name: str | None
    args: dict
    source: tuple | None = None
    flow_out: tuple = ()
    flow_in: tuple = ()


@dataclass
class CounterSample:
    track: int
    ts: int
    value: float | int


@dataclass
class Flow:
    id: int
    src_track: int
    src_ts: int
    dst_track: int
    dst_ts: int


@dataclass
class TraceModel:
    """Everything read from a trace; timestamps are absolute ns (deltas resolved)."""

    tracks: dict[int, TrackInfo] = field(default_factory=dict)   # in declaration order
    slices: list[Slice] = field(default_factory=list)
    instants: list[Instant] = field(default_factory=list)
    counters: list[CounterSample] = field(default_factory=list)
    flows: list[Flow] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)
    dropped: int = 0
    packets: int = 0
    sequences: int = 0
    problems: list[str] = field(default_factory=list)

    def track_named(self, name: str) -> TrackInfo:
        matches = [t for t in self.tracks.values() if t.name == name]
        if len(matches) != 1:
            raise KeyError(f"{len(matches)} tracks are named {name!r}")
        return matches[0]

    def slices_on(self, name: str) -> list[Slice]:
        uuid = self.track_named(name).uuid
        return [s for s in self.slices if s.track == uuid]

    def counters_on(self, name: str) -> list[CounterSample]:
        uuid = self.track_named(name).uuid
        return [c for c in self.counters if c.track == uuid]

    def children(self, uuid: int | None) -> list[TrackInfo]:
        """Child tracks of `uuid` (None: the top-level tracks) in the order a UI shows them."""
        kids = [t for t in self.tracks.values() if t.parent == uuid]
        return sorted(kids, key=lambda t: (t.rank is None, t.rank or 0))


# ---------------------------------------------------------------------------------- framing
class _Problems(list):
    def add(self, message: str) -> None:
        if len(self) < _MAX_PROBLEMS:
            self.append(message)
        elif len(self) == _MAX_PROBLEMS:
            self.append("too many problems; the rest are not listed")


def _open_trace(path: Path) -> tuple[BinaryIO, BinaryIO]:
    if not path.is_file():
        raise UserError(f"trace file not found: {path}")
    raw = open(path, "rb")
    if raw.read(2) == b"\x1f\x8b":
        raw.seek(0)
        return raw, gzip.GzipFile(fileobj=raw, mode="rb")
    raw.seek(0)
    return raw, raw


def _packets(stream: BinaryIO, problems: _Problems) -> Iterator[tuple[int, int, memoryview]]:
    """Yield (packet index, byte offset, packet bytes) of a Trace read in chunks."""
    buf = bytearray()
    start = 0           # index in buf of the next unread byte
    offset = 0          # file offset of buf[start]
    eof = False
    index = 0

    def read_more() -> bool:
        nonlocal eof
        try:
            chunk = stream.read(_CHUNK)
        except (EOFError, OSError, zlib.error) as exc:
            problems.add(f"the gzip stream is truncated or corrupt after {offset + len(buf) - start} "
                         f"decompressed bytes ({exc})")
            chunk = b""
        if not chunk:
            eof = True
            return False
        buf.extend(chunk)
        return True

    while True:
        if start > _CHUNK:
            del buf[:start]
            start = 0
        if len(buf) - start < 11 and not eof:
            read_more()
        if start >= len(buf):
            return
        if buf[start] != 0x0A:
            problems.add(f"byte {offset}: expected a TracePacket (Trace field 1), found tag byte "
                         f"0x{buf[start]:02x}; the file is not a Perfetto trace or is corrupt")
            return
        length, shift, pos = 0, 0, start + 1
        while True:
            if pos >= len(buf):
                if eof or not read_more():
                    problems.add(f"the trace is truncated: packet {index} at byte {offset} has an "
                                 f"incomplete length")
                    return
                continue
            byte = buf[pos]
            length |= (byte & 0x7F) << shift
            pos += 1
            if byte < 0x80:
                break
            shift += 7
        while len(buf) - pos < length and not eof:
            read_more()
        if len(buf) - pos < length:
            problems.add(f"the trace is truncated: packet {index} at byte {offset} needs {length} bytes, "
                         f"only {len(buf) - pos} remain")
            return
        yield index, offset, memoryview(buf)[pos:pos + length].tobytes()
        offset += pos + length - start
        start = pos + length
        index += 1


# ---------------------------------------------------------------------------------- sequences
class _Clock:
    __slots__ = ("incremental", "multiplier", "value", "snapshot_value", "snapshot_trace_ts")

    def __init__(self, incremental: bool, multiplier: int, value: int, trace_ts: int):
        self.incremental = incremental
        self.multiplier = multiplier
        self.value = value
        self.snapshot_value = value
        self.snapshot_trace_ts = trace_ts


class _Sequence:
    def __init__(self, seq_id: int):
        self.id = seq_id
        self.cleared = False
        self.last_ts: int | None = None
        self.reported_uncleared = False
        self.reset()

    def reset(self) -> None:
        self.default_clock = 0
        self.default_track: int | None = None
        self.event_names: dict[int, str] = {}
        self.annotation_names: dict[int, str] = {}
        self.string_values: dict[int, str] = {}
        self.sources: dict[int, tuple] = {}
        self.clocks: dict[int, _Clock] = {}


# A track event as read: (ts, packet index, type, name, args, source, flow_out, flow_in, counter value).
_Event = tuple


class _Reader:
    """Feeds packets one at a time; `finish()` builds the TraceModel."""

    def __init__(self, problems: _Problems):
        self.problems = problems
        self.model = TraceModel()
        self.sequences: dict[int, _Sequence] = {}
        self.events: dict[int, list[_Event]] = {}
        self.undeclared_reported: set[int] = set()
        self.packets = 0
        self.last_event: tuple[int, _Event] | None = None

    # -- packets
    def packet(self, index: int, offset: int, data: bytes) -> None:
        self.packets += 1
        try:
            packet = pb.TracePacket.FromString(data)
        except DecodeError as exc:
            self.problems.add(f"packet {index} at byte {offset} does not parse ({exc})")
            return
        seq_id = packet.trusted_packet_sequence_id
        seq = self.sequences.get(seq_id)
        if seq is None:
            seq = self.sequences[seq_id] = _Sequence(seq_id)
        if packet.sequence_flags & _CLEARED or packet.incremental_state_cleared:
            seq.cleared = True
            seq.reset()
        if packet.HasField("trace_packet_defaults"):
            defaults = packet.trace_packet_defaults
            seq.default_clock = defaults.timestamp_clock_id
            te_defaults = defaults.track_event_defaults
            seq.default_track = te_defaults.track_uuid if te_defaults.HasField("track_uuid") else None
        if packet.HasField("interned_data"):
            self._require_cleared(seq, index)
            self._intern(seq, packet.interned_data)
        data_field = packet.WhichOneof("data")
        if data_field == "clock_snapshot":
            self._clock_snapshot(seq, packet.clock_snapshot, index)
            ts = None   # a snapshot packet's own timestamp does not move the sequence's clocks
        elif packet.HasField("timestamp"):
            ts = self._timestamp(seq, packet, index)
        else:
            ts = None
        if data_field == "track_event":
            if ts is None:
                self.problems.add(f"packet {index}: a track event without a usable timestamp")
            else:
                self._track_event(seq, packet.track_event, ts, index)
        elif data_field == "track_descriptor":
            self._declare(packet.track_descriptor)

    def _require_cleared(self, seq: _Sequence, index: int) -> None:
        if not seq.cleared and not seq.reported_uncleared:
            seq.reported_uncleared = True
            self.problems.add(f"sequence {seq.id}: packet {index} relies on incremental state (interned "
                              f"data or an incremental clock) but the sequence never set "
                              f"SEQ_INCREMENTAL_STATE_CLEARED before it")

    def _intern(self, seq: _Sequence, interned) -> None:
        for entry in interned.event_names:
            seq.event_names[entry.iid] = entry.name
        for entry in interned.debug_annotation_names:
            seq.annotation_names[entry.iid] = entry.name
        for entry in interned.debug_annotation_string_values:
            seq.string_values[entry.iid] = entry.str.decode(errors="replace")
        for entry in interned.source_locations:
            seq.sources[entry.iid] = (entry.file_name, entry.function_name, entry.line_number)

    def _clock_snapshot(self, seq: _Sequence, snapshot, index: int) -> None:
        builtin = [c for c in snapshot.clocks if c.clock_id < _FIRST_SEQUENCE_CLOCK]
        scoped = [c for c in snapshot.clocks if _FIRST_SEQUENCE_CLOCK <= c.clock_id <= _LAST_SEQUENCE_CLOCK]
        if scoped and not builtin:
            self.problems.add(f"sequence {seq.id}: the clock snapshot in packet {index} has no builtin "
                              f"clock, so its sequence clocks cannot be converted to trace time")
            return
        if any(c.is_incremental for c in scoped):
            self._require_cleared(seq, index)
        trace_ts = builtin[0].timestamp * (builtin[0].unit_multiplier_ns or 1) if builtin else 0
        for c in scoped:
            multiplier = c.unit_multiplier_ns or 1
            seq.clocks[c.clock_id] = _Clock(c.is_incremental, multiplier, c.timestamp * multiplier, trace_ts)

    def _timestamp(self, seq: _Sequence, packet, index: int) -> int | None:
        raw = packet.timestamp
        clock_id = packet.timestamp_clock_id if packet.HasField("timestamp_clock_id") else seq.default_clock
        if _FIRST_SEQUENCE_CLOCK <= clock_id <= _LAST_SEQUENCE_CLOCK:
            clock = seq.clocks.get(clock_id)
            if clock is None:
                self.problems.add(f"sequence {seq.id}: packet {index} uses clock {clock_id}, which no clock "
                                  f"snapshot on this sequence defines")
                return None
            if clock.incremental:
                clock.value += raw * clock.multiplier
                value = clock.value
            else:
                value = raw * clock.multiplier
            ts = value - clock.snapshot_value + clock.snapshot_trace_ts
        elif clock_id < _FIRST_SEQUENCE_CLOCK:
            ts = raw   # builtin clocks are taken as the trace clock
        else:
            self.problems.add(f"sequence {seq.id}: packet {index} uses clock {clock_id}, outside the "
                              f"builtin and sequence-scoped ranges")
            return None
        if seq.last_ts is not None and ts < seq.last_ts:
            self.problems.add(f"sequence {seq.id}: timestamps go backwards at packet {index} "
                              f"({ts} < {seq.last_ts})")
        seq.last_ts = ts if seq.last_ts is None else max(ts, seq.last_ts)
        return ts

    def _declare(self, desc) -> None:
        if desc.HasField("process"):
            name = desc.name or desc.process.process_name
        elif desc.HasField("thread"):
            name = desc.name or desc.thread.thread_name
        else:
            name = desc.name or desc.static_name or desc.atrace_name
        unit = None
        if desc.HasField("counter"):
            unit = (desc.counter.unit_name or
                    {1: "ns", 2: "count", 3: "bytes"}.get(desc.counter.unit))
        self.model.tracks.setdefault(desc.uuid, TrackInfo(
            uuid=desc.uuid, name=name, parent=desc.parent_uuid if desc.HasField("parent_uuid") else None,
            rank=desc.sibling_order_rank if desc.HasField("sibling_order_rank") else None,
            is_counter=desc.HasField("counter"), unit=unit, description=desc.description))

    def _lookup(self, seq: _Sequence, table: dict, iid: int, what: str, index: int):
        value = table.get(iid)
        if value is None or not seq.cleared:
            self._require_cleared(seq, index)
            if value is None:
                self.problems.add(f"sequence {seq.id}: packet {index} uses interned {what} iid {iid}, which "
                                  f"is not defined before it on that sequence")
        return value

    def _track_event(self, seq: _Sequence, event, ts: int, index: int) -> None:
        if event.HasField("track_uuid"):
            track = event.track_uuid
        elif seq.default_track is not None:
            track = seq.default_track
        else:
            self.problems.add(f"packet {index}: a track event with no track_uuid and no default track")
            return
        if track not in self.model.tracks and track not in self.undeclared_reported:
            self.undeclared_reported.add(track)
            self.problems.add(f"packet {index}: track {track} is used before any TrackDescriptor "
                              f"declares it")
        etype = event.type
        if etype == _END:
            record = (ts, index, etype, None, {}, None, (), (), None)
        elif etype in (_BEGIN, _INSTANT, _COUNTER):
            record = self._event_record(seq, event, ts, index, etype)
        else:
            self.problems.add(f"packet {index}: track event of unsupported type {etype}")
            return
        events = self.events.get(track)
        if events is None:
            events = self.events[track] = []
        events.append(record)
        self.last_event = (track, record)

    def _event_record(self, seq: _Sequence, event, ts: int, index: int, etype: int) -> tuple:
        name_field = event.WhichOneof("name_field")
        if name_field == "name_iid":
            name = self._lookup(seq, seq.event_names, event.name_iid, "event name", index)
        else:
            name = event.name if name_field == "name" else None
        args = {}
        for annotation in event.debug_annotations:
            if annotation.WhichOneof("name_field") == "name_iid":
                key = self._lookup(seq, seq.annotation_names, annotation.name_iid, "annotation name", index)
            else:
                key = annotation.name
            args[key] = self._value(seq, annotation, index)
        source_field = event.WhichOneof("source_location_field")
        if source_field == "source_location_iid":
            source = self._lookup(seq, seq.sources, event.source_location_iid, "source location", index)
        elif source_field == "source_location":
            loc = event.source_location
            source = (loc.file_name, loc.function_name, loc.line_number)
        else:
            source = None
        value_field = event.WhichOneof("counter_value_field")
        value = getattr(event, value_field) if value_field else None
        flow_out, flow_in = tuple(event.flow_ids), tuple(event.terminating_flow_ids)
        if event.flow_ids_old or event.terminating_flow_ids_old:
            flow_out += tuple(event.flow_ids_old)
            flow_in += tuple(event.terminating_flow_ids_old)
        return (ts, index, etype, name, args, source, flow_out, flow_in, value)

    def _value(self, seq: _Sequence, annotation, index: int):
        kind = annotation.WhichOneof("value")
        if kind == "string_value_iid":
            return self._lookup(seq, seq.string_values, annotation.string_value_iid, "string value", index)
        if kind is None:
            if annotation.dict_entries:
                return {entry.name: self._value(seq, entry, index) for entry in annotation.dict_entries}
            if annotation.array_values:
                return [self._value(seq, entry, index) for entry in annotation.array_values]
            return None
        if kind == "nested_value":
            return str(annotation.nested_value)
        return getattr(annotation, kind)

    # -- model
    def finish(self) -> TraceModel:
        model = self.model
        model.packets = self.packets
        model.sequences = len([s for s in self.sequences if s])
        for uuid, events in self.events.items():
            self._build_track(uuid, sorted(events, key=_event_order))
        for track in model.tracks.values():
            if track.parent is not None and track.parent not in model.tracks:
                self.problems.add(f"track {track.name!r} ({track.uuid}) has parent {track.parent}, which "
                                  f"is never declared")
        model.slices.sort(key=lambda s: (s.ts, s.track, s.depth))
        model.instants.sort(key=lambda i: (i.ts, i.track))
        model.counters.sort(key=lambda c: (c.track, c.ts))
        self._pair_flows()
        for instant in model.instants:
            track = model.tracks.get(instant.track)
            if track is not None and track.parent is None:
                if instant.name == METADATA_EVENT_NAME and not model.metadata:
                    model.metadata = dict(instant.args)
                elif instant.name == DROPPED_EVENT_NAME:
                    model.dropped += int(instant.args.get("dropped_slices", 0) or 0)
        model.problems = list(self.problems)
        return model

    def _build_track(self, uuid: int, events: list[_Event]) -> None:
        model = self.model
        info = model.tracks.get(uuid)
        label = f"{info.name!r}" if info else str(uuid)
        is_counter = info is not None and info.is_counter
        stack: list[_Event] = []
        for ev in events:
            ts, _, etype, name, args, source, flow_out, flow_in, value = ev
            if etype == _COUNTER:
                if not is_counter:
                    self.problems.add(f"track {label}: counter value at {ts} on a track that is not a "
                                      f"counter track")
                if value is None:
                    self.problems.add(f"track {label}: counter event at {ts} has no value")
                model.counters.append(CounterSample(uuid, ts, value))
                continue
            if is_counter:
                self.problems.add(f"track {label}: slice or instant event at {ts} on a counter track")
            if etype == _BEGIN:
                stack.append(ev)
            elif etype == _END:
                if not stack:
                    self.problems.add(f"track {label}: END at {ts} without a BEGIN on that track")
                    continue
                b_ts, _, _, b_name, b_args, b_source, b_out, b_in, _ = stack.pop()
                model.slices.append(Slice(uuid, b_ts, ts - b_ts, b_name, b_args, len(stack), b_source,
                                          b_out, b_in))
            else:
                model.instants.append(Instant(uuid, ts, name, args, source, flow_out, flow_in))
        for begin in stack:
            self.problems.add(f"track {label}: slice {begin[3]!r} begun at {begin[0]} never ends")

    def _pair_flows(self) -> None:
        starts: dict[int, list] = {}
        ends: dict[int, list] = {}
        for event in [*self.model.slices, *self.model.instants]:
            for fid in event.flow_out:
                starts.setdefault(fid, []).append(event)
            for fid in event.flow_in:
                ends.setdefault(fid, []).append(event)
        for fid in sorted(starts.keys() | ends.keys()):
            origins = sorted(starts.get(fid, []), key=lambda e: e.ts)
            targets = ends.get(fid, [])
            if not targets:
                first = origins[0]
                self.problems.add(f"flow {fid} starts at {first.name!r} (ts {first.ts}) but never ends")
                continue
            if not origins:
                self.problems.add(f"flow {fid} ends at {targets[0].name!r} (ts {targets[0].ts}) but never "
                                  f"starts")
                continue
            if len(targets) > 1:
                self.problems.add(f"flow {fid} ends {len(targets)} times")
            target = targets[0]
            if target.ts < origins[-1].ts:
                self.problems.add(f"flow {fid} ends (ts {target.ts}) before it starts "
                                  f"(ts {origins[-1].ts})")
            chain = origins + [target]
            for a, b in zip(chain, chain[1:]):
                self.model.flows.append(Flow(fid, a.track, a.ts, b.track, b.ts))


# ---------------------------------------------------------------------------------- entry points
def read_trace(path: str | os.PathLike) -> TraceModel:
    """Read a whole trace into a TraceModel; problems found on the way are in `.problems`."""
    problems = _Problems()
    raw, stream = _open_trace(Path(path))
    reader = _Reader(problems)
    try:
        for index, offset, data in _packets(stream, problems):
            reader.packet(index, offset, data)
    finally:
        stream.close()
        raw.close()
    if reader.packets == 0 and not problems:
        problems.add("the file holds no trace packets")
    return reader.finish()


def validate_trace(path: str | os.PathLike) -> list[str]:
    """Problems that make the trace invalid or misleading; an empty list means it is sound."""
    return read_trace(path).problems


def read_metadata(path: str | os.PathLike, max_packets: int = 10_000) -> dict:
    """The metadata ("trace info" instant on the root track) a TraceWriter stored in a trace.

    Reads packets only until the metadata is found (it is among the first few); {} if there is none.
    """
    problems = _Problems()
    raw, stream = _open_trace(Path(path))
    reader = _Reader(problems)
    try:
        for index, offset, data in _packets(stream, problems):
            reader.last_event = None
            reader.packet(index, offset, data)
            if reader.last_event is not None:
                uuid, (_, _, etype, name, args, *_) = reader.last_event
                track = reader.model.tracks.get(uuid)
                on_root = track is not None and track.parent is None
                if on_root and etype == _INSTANT and name == METADATA_EVENT_NAME:
                    return dict(args)
            if index + 1 >= max_packets:
                break
    finally:
        stream.close()
        raw.close()
    if problems and reader.packets == 0:
        raise UserError(f"{path} is not a readable Perfetto trace: {problems[0]}")
    return {}
