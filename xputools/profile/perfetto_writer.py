"""Streaming writer of native Perfetto traces (`.pftrace`, protobuf `Trace` = repeated TracePacket).

Layout of a trace written here:
  * sequence 1 belongs to the root "device" track: its TrackDescriptor, the TrackDescriptors of every
    other track (in declaration order; children ordered EXPLICITly by `sibling_order_rank`), a
    "trace info" instant whose debug annotations carry the trace metadata (also summarised in the
    root track's description), and closing markers ("dropped events", "flows without a receiver")
    when there is something to report;
  * every other track gets its own trusted packet sequence, started lazily by one packet that clears
    incremental state and sets TracePacketDefaults (the track's uuid, and the sequence-scoped
    incremental clock 64 as timestamp clock) plus a ClockSnapshot tying clock 64 to BOOTTIME. Later
    packets carry delta timestamps (1-3 bytes), interned event names / annotation names / string
    values / source locations, and no track uuid. This is the scheme of the Perfetto SDK itself
    (track_event ResetIncrementalState).

The hot path (slice begin/end, instants, counters) encodes TracePackets by hand; the bytes are the
ones the protobuf classes produce for the same message (fields in field-number order), which
tests/profile/test_perfetto_writer.py checks. Descriptors, sequence headers and everything else are
built with the `perfetto` package's protobuf classes. `add_slice` takes one slice per call;
`add_slices` takes a track's slices as columns and encodes them with C-level map/zip/join, about
twice as fast (bench/bench_trace_export.py). Packets are buffered and flushed in batches, so memory
stays bounded by the open slices per track and the interning tables (which stop growing past
MAX_INTERNED_PER_SEQUENCE entries: later new strings are written inline).

Timestamps are integer nanoseconds; the caller converts device cycles.
"""
from __future__ import annotations

import gzip as _gzip
import operator
import os
from dataclasses import asdict, dataclass
from itertools import chain, compress, repeat
from pathlib import Path
from struct import Struct

from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb

from .. import __version__

TRACE_FORMAT_VERSION = 1
METADATA_EVENT_NAME = "trace info"
DROPPED_EVENT_NAME = "dropped events"
UNPAIRED_FLOWS_EVENT_NAME = "flows without a receiver"
FORMAT_KEY = "trace_format"
WRITER_KEY = "writer"

BOOTTIME_CLOCK_ID = pb.BUILTIN_CLOCK_BOOTTIME
INCREMENTAL_CLOCK_ID = 64  # the first sequence-scoped clock id
MAX_INTERNED_PER_SEQUENCE = 50_000
_BATCH_ROWS = 16384   # add_slices encodes this many rows at a time
ROOT_SEQUENCE_ID = 1
ROOT_TRACK_UUID = 1

_UNITS = {
    "ns": pb.CounterDescriptor.UNIT_TIME_NS,
    "count": pb.CounterDescriptor.UNIT_COUNT,
    "bytes": pb.CounterDescriptor.UNIT_SIZE_BYTES,
}
_U64 = (1 << 64) - 1
_I64_MAX = (1 << 63) - 1
_I64_MIN = -(1 << 63)
_DOUBLE = Struct("<d")
_FIXED64 = Struct("<Q")


class TraceWriterError(ValueError):
    """The writer was used in a way that would produce an invalid trace."""


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_VT = [_encode_varint(i) for i in range(1 << 14)]   # varints of 0..16383, the common case
_VT_PACKET = [b"\x0a" + v for v in _VT]             # Trace.packet tag + length
_VT_TIMESTAMP = [b"\x40" + v for v in _VT]          # TracePacket.timestamp tag + value


def varint(value: int) -> bytes:
    """Protobuf base-128 varint of a non-negative int (negative int64s: pass value & (2**64 - 1))."""
    if value < 16384:
        return _VT[value]
    if value < 2097152:
        return bytes(((value & 0x7F) | 0x80, ((value >> 7) & 0x7F) | 0x80, value >> 14))
    return _encode_varint(value)


def _field(tag: bytes, payload: bytes) -> bytes:
    return tag + varint(len(payload)) + payload


# Tags (field number << 3 | wire type) of the fields written by hand.
_T_PACKET = b"\x0a"              # Trace.packet = 1, LEN
_T_TIMESTAMP = b"\x40"           # TracePacket.timestamp = 8, VARINT
_T_SEQUENCE = b"\x50"            # TracePacket.trusted_packet_sequence_id = 10, VARINT
_T_TRACK_EVENT = b"\x5a"         # TracePacket.track_event = 11, LEN
_T_INTERNED = b"\x62"            # TracePacket.interned_data = 12, LEN
_T_ANNOTATION = b"\x22"          # TrackEvent.debug_annotations = 4, LEN
_TYPE_BEGIN = b"\x48\x01"        # TrackEvent.type = 9: TYPE_SLICE_BEGIN
_TYPE_END = b"\x48\x02"          # TYPE_SLICE_END
_TYPE_INSTANT = b"\x48\x03"      # TYPE_INSTANT
_TYPE_COUNTER = b"\x48\x04"      # TYPE_COUNTER
_T_NAME_IID = b"\x50"            # TrackEvent.name_iid = 10, VARINT
_T_NAME = b"\xba\x01"            # TrackEvent.name = 23, LEN
_T_COUNTER_INT = b"\xf0\x01"     # TrackEvent.counter_value = 30, VARINT
_T_SOURCE = b"\x8a\x02"         # TrackEvent.source_location = 33, LEN
_T_SOURCE_IID = b"\x90\x02"      # TrackEvent.source_location_iid = 34, VARINT
_T_COUNTER_DOUBLE = b"\xe1\x02"  # TrackEvent.double_counter_value = 44, I64
_T_FLOW_OUT = b"\xf9\x02"        # TrackEvent.flow_ids = 47, I64 (fixed64)
_T_FLOW_IN = b"\x81\x03"         # TrackEvent.terminating_flow_ids = 48, I64 (fixed64)
_T_ANN_NAME_IID = b"\x08"        # DebugAnnotation.name_iid = 1
_T_ANN_BOOL = b"\x10"            # DebugAnnotation.bool_value = 2
_T_ANN_UINT = b"\x18"            # DebugAnnotation.uint_value = 3
_T_ANN_INT = b"\x20"             # DebugAnnotation.int_value = 4
_T_ANN_DOUBLE = b"\x29"          # DebugAnnotation.double_value = 5
_T_ANN_STRING = b"\x32"          # DebugAnnotation.string_value = 6
_T_ANN_NAME = b"\x52"            # DebugAnnotation.name = 10
_T_ANN_STRING_IID = b"\x88\x01"  # DebugAnnotation.string_value_iid = 17
_T_IID = b"\x08"                 # EventName / DebugAnnotationName / InternedString / SourceLocation .iid = 1
_T_IID_STR = b"\x12"             # EventName.name / DebugAnnotationName.name / InternedString.str = 2
_T_SRC_FILE = b"\x12"            # SourceLocation.file_name = 2
_T_SRC_FUNCTION = b"\x1a"        # SourceLocation.function_name = 3
_T_SRC_LINE = b"\x20"            # SourceLocation.line_number = 4
# InternedData fields, keyed by field number so pending entries can be written in that order.
_INTERN_EVENT_NAME, _INTERN_ANN_NAME, _INTERN_SOURCE, _INTERN_STRING_VALUE = 2, 3, 4, 29
_INTERN_TAGS = {2: b"\x12", 3: b"\x1a", 4: b"\x22", 29: b"\xea\x01"}

_SLICE_KIND = "slice"
_COUNTER_KIND = "counter"


@dataclass(frozen=True)
class TraceStats:
    """What close() reports: what was written, and what was not (never silently)."""

    path: str
    slices: int
    instants: int
    counters: int
    flows: int
    dropped: int
    unpaired_flows: int
    tracks: int
    sequences: int
    packets: int
    raw_bytes: int      # uncompressed trace size
    bytes: int          # size of the file on disk

    def as_dict(self) -> dict:
        return asdict(self)


class Track:
    """A handle on one declared track; put events on it with its writer's add_* methods."""

    __slots__ = ("uuid", "name", "kind", "parent", "_owner", "_seq", "_seq_te", "_end_tail", "_end_heads",
                 "_last_ts", "_ends", "_slice_owner", "_names", "_keys", "_sources",
                 "_pending", "_interned", "_next_iid", "_begins")

    def __init__(self, owner: "TraceWriter", uuid: int, name: str, kind: str, parent: "Track | None"):
        self.uuid = uuid
        self.name = name
        self.kind = kind
        self.parent = parent
        self._owner = owner
        self._seq: bytes | None = None    # encoded trusted_packet_sequence_id, once the sequence started
        self._seq_te = b""                # _seq + the track_event tag
        self._end_tail = b""              # sequence id + track_event{type: END}
        self._end_heads: list[bytes] = []  # packet header + timestamp tag, by varint length of the delta
        # Timestamp of the last packet on this sequence: the delta base, and the earliest time the
        # next event may have (events on a track arrive in timestamp order).
        self._last_ts = 0
        self._ends: list[int] = []        # end times of the open slices, innermost last
        self._slice_owner = owner if kind == _SLICE_KIND else None   # None once the writer closes
        self._names: dict[str, bytes] = {}      # event name -> encoded name_iid field
        # arg name -> ({str value: annotation}, annotation heads by int varint length, name field)
        self._keys: dict[str, tuple] = {}
        self._sources: dict[tuple, bytes] = {}  # (file, function, line) -> encoded source_location_iid
        self._pending: list[tuple[int, bytes]] = []   # (InternedData field, entry) not yet written
        self._begins: dict[str, bytes] = {}     # event name -> TrackEvent type BEGIN + name field
        self._interned = 0
        self._next_iid = {_INTERN_EVENT_NAME: 1, _INTERN_ANN_NAME: 1, _INTERN_SOURCE: 1,
                          _INTERN_STRING_VALUE: 1}

    def __repr__(self) -> str:
        return f"Track({self.name!r}, kind={self.kind}, uuid={self.uuid})"


def _as_int(value, what: str) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{what} must be an integer number of ns, got a bool")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{what} must be an integer number of ns, got {type(value).__name__} "
                        f"{value!r} (convert device cycles to integer ns first)") from None


def _varints(values, table: list[bytes] = _VT, tag: bytes = b"") -> list[bytes]:
    """Varints of non-negative ints, each prefixed by `tag` (`table` holds tag + varint(i), i < 16384)."""
    if not isinstance(values, list):
        values = list(values)
    try:
        return list(map(table.__getitem__, values))   # values are never negative here
    except IndexError:
        return [tag + varint(value) for value in values]


def _column(values, n: int, what: str) -> list:
    values = list(values.tolist() if hasattr(values, "tolist") else values)
    if len(values) != n:
        raise TraceWriterError(f"add_slices: {what} has {len(values)} entries, expected {n}")
    return values


def _int_column(values, what: str) -> list[int]:
    values = list(values.tolist() if hasattr(values, "tolist") else values)
    if not set(map(type, values)) <= {int}:
        values = [_as_int(v, what) for v in values]
    return values


def _flow_ids(value, what: str) -> tuple[int, ...]:
    ids = (value,) if isinstance(value, int) else tuple(value)
    for fid in ids:
        if not isinstance(fid, int) or isinstance(fid, bool) or not 0 < fid <= _U64:
            raise TraceWriterError(f"{what} ids must be integers in [1, 2**64), got {fid!r}")
    return ids


class TraceWriter:
    """Write a Perfetto trace incrementally.

    >>> w = TraceWriter("run.pftrace", metadata={"model": "resnet18", "arch": "xpu1"})
    >>> pe = w.add_track("PE")
    >>> w.add_slice(pe, 100, 50, "matmul", {"pc": 12, "bytes": 4096},
    ...             source=("resnet18.onnx", "/conv1/Conv", 3))
    >>> stats = w.close()

    Slices on one track must arrive in start-time order and nest properly (a slice that starts inside
    another also ends inside it). Each track gets its own packet sequence. `max_slices` caps the slices
    written: the excess is counted, reported by close() and marked in the trace. `gzip=None`
    compresses when the path ends in ".gz" (the Perfetto UI opens gzip'd traces).
    """

    def __init__(self, path: str | os.PathLike, gzip: bool | None = None, metadata: dict | None = None,
                 device_name: str = "XPU device", max_slices: int | None = None,
                 flush_bytes: int = 1 << 20, compresslevel: int = 6):
        self.path = Path(path)
        if gzip is None:
            gzip = self.path.suffix == ".gz"
        if max_slices is not None and (not isinstance(max_slices, int) or max_slices < 0):
            raise TraceWriterError(f"max_slices must be a non-negative int or None, got {max_slices!r}")
        if not isinstance(device_name, str) or not device_name:
            raise TraceWriterError(f"device_name must be a non-empty string, got {device_name!r}")
        self.metadata = self._checked_metadata(metadata)
        self._raw_file = open(self.path, "wb")
        # mtime=0 and no file name keep gzip'd output byte-for-byte deterministic.
        self._file = (_gzip.GzipFile(fileobj=self._raw_file, mode="wb", compresslevel=compresslevel,
                                     mtime=0, filename="") if gzip else self._raw_file)
        self._out: list[bytes] = []       # encoded pieces not yet written; joined on flush
        self._flush_pieces = max(1, flush_bytes // 16)   # a piece averages well under 16 bytes
        self._raw_bytes = 0
        self._closed = False
        self._stats: TraceStats | None = None
        self._max_slices = max_slices
        self._limit = max_slices if max_slices is not None else float("inf")
        self._tracks: list[Track] = []
        self._next_uuid = ROOT_TRACK_UUID
        self._next_seq = ROOT_SEQUENCE_ID
        self._next_rank = 0
        self._n_slices = self._n_instants = self._n_counters = self._n_other_packets = 0
        self._n_flows = 0
        self._dropped = 0
        self._dropped_flow_ids: set[int] = set()
        self._open_flows: dict[int, int] = {}      # flow id -> start time of its origin
        self._early_ends: dict[int, int] = {}      # flow id -> time it ended, origin not written yet

        self.root = self._declare(device_name, _SLICE_KIND, None, None, self._root_description(),
                                  start_sequence=True)
        self.add_instant(self.root, 0, METADATA_EVENT_NAME, self.metadata)

    # ------------------------------------------------------------------ declarations
    def add_track(self, name: str, parent: Track | None = None, rank: int | None = None,
                  description: str | None = None) -> Track:
        """Declare a slice track, under the device root unless `parent` is given.

        Siblings are shown in increasing `rank`; by default, in the order they were declared.
        """
        return self._declare(name, _SLICE_KIND, self._parent(parent), rank, description)

    def add_counter_track(self, name: str, unit: str | None = None, parent: Track | None = None,
                          rank: int | None = None, description: str | None = None) -> Track:
        """Declare a counter track; `unit` is "ns", "count", "bytes" or any other unit name."""
        return self._declare(name, _COUNTER_KIND, self._parent(parent), rank, description, unit)

    def _parent(self, parent: Track | None) -> Track:
        if parent is None:
            return self.root
        self._check_track(parent, _SLICE_KIND, "parent")
        return parent

    def _declare(self, name, kind, parent, rank, description, unit=None, start_sequence=False) -> Track:
        self._check_open()
        if not isinstance(name, str) or not name:
            raise TraceWriterError(f"track name must be a non-empty string, got {name!r}")
        if rank is None:
            rank = self._next_rank
        elif not isinstance(rank, int) or not -(1 << 31) <= rank < (1 << 31):
            raise TraceWriterError(f"track rank must be a 32-bit int, got {rank!r}")
        self._next_rank += 1
        track = Track(self, self._next_uuid, name, kind, parent)
        self._next_uuid += 1
        self._tracks.append(track)
        if start_sequence:
            self._start_sequence(track)

        packet = pb.TracePacket(trusted_packet_sequence_id=ROOT_SEQUENCE_ID)
        desc = packet.track_descriptor
        desc.uuid = track.uuid
        desc.name = name
        if description:
            desc.description = description
        if kind == _SLICE_KIND:
            desc.child_ordering = pb.TrackDescriptor.EXPLICIT
        if parent is not None:
            desc.parent_uuid = parent.uuid
            desc.sibling_order_rank = rank
            desc.sibling_merge_behavior = pb.TrackDescriptor.SIBLING_MERGE_BEHAVIOR_NONE
        if kind == _COUNTER_KIND:
            desc.counter.SetInParent()
            if unit in _UNITS:
                desc.counter.unit = _UNITS[unit]
            elif unit:
                desc.counter.unit_name = str(unit)
        self._append_packet(packet.SerializeToString())
        return track

    def _root_description(self) -> str:
        return "; ".join(f"{k}: {v}" for k, v in self.metadata.items())

    @staticmethod
    def _checked_metadata(metadata: dict | None) -> dict:
        meta = {}
        for key, value in (metadata or {}).items():
            if not isinstance(key, str) or not key:
                raise TraceWriterError(f"metadata keys must be non-empty strings, got {key!r}")
            if not isinstance(value, (str, int, float, bool)):
                raise TraceWriterError(f"metadata value for {key!r} must be str, int, float or bool, "
                                       f"got {type(value).__name__}")
            meta[key] = value
        meta[FORMAT_KEY] = TRACE_FORMAT_VERSION
        meta[WRITER_KEY] = f"xputools {__version__}"
        return meta

    # ------------------------------------------------------------------ events
    def add_slice(self, track: Track, ts_ns: int, dur_ns: int, name: str, args: dict | None = None,
                  flow_out=None, flow_in=None, source: tuple | None = None) -> bool:
        """Add the slice [ts_ns, ts_ns + dur_ns). Returns False if max_slices made the writer drop it.

        args: {name: str | int | float | bool}. flow_out / flow_in: flow id(s) (ints) that start /
        end at this slice. source: (file_name, function_name, line_number) where the work comes from,
        e.g. (model file, ONNX node name, node index); interned, so cheap to repeat on every slice.
        """
        # The hot path: written flat, common cases first. A track's _slice_owner is its writer while
        # the writer is open and the track is a slice track; anything else takes the slow checks.
        try:
            valid = track._slice_owner is self
        except AttributeError:
            valid = False
        if not valid:
            self._check_open()
            self._check_track(track, _SLICE_KIND, "add_slice")
        ts = ts_ns if ts_ns.__class__ is int else _as_int(ts_ns, "ts_ns")
        dur = dur_ns if dur_ns.__class__ is int else _as_int(dur_ns, "dur_ns")
        if ts < track._last_ts or dur < 0:
            self._bad_time(track, ts, dur, name)
        if self._n_slices >= self._limit:
            self._drop(flow_out)
            return False
        if name.__class__ is not str:
            raise TypeError(f"slice name must be a str, got {type(name).__name__}")
        end = ts + dur
        ends = track._ends
        out = self._out
        last = track._last_ts
        if ends:
            if ends[-1] <= ts:
                # Close the slices that ended by now: one END packet each, innermost first.
                heads, tail = track._end_heads, track._end_tail
                while ends and ends[-1] <= ts:
                    e = ends.pop()
                    d = e - last
                    vd = _VT[d] if d < 16384 else varint(d)
                    out += (heads[len(vd)], vd, tail)
                    last = e
                track._last_ts = last
            if ends and end > ends[-1]:
                raise TraceWriterError(
                    f"slice {name!r} [{ts}, {end}) on track {track.name!r} starts inside a slice that "
                    f"ends at {ends[-1]}, but ends after it: slices on one track must nest")
        seq_te = track._seq_te
        if not seq_te:
            self._start_sequence(track)
            seq_te = track._seq_te
        begin = track._begins.get(name)
        if begin is None:
            begin = self._intern_begin(track, name)
        if args:
            keys = track._keys
            parts = []
            append = parts.append
            try:
                items = args.items()
            except AttributeError:
                raise TypeError(f"args must be a dict, got {type(args).__name__}") from None
            for key, value in items:        # _encode_args, inlined
                entry = keys.get(key)
                if entry is None:
                    entry = self._intern_key(track, key)
                cls = value.__class__
                if cls is str:
                    annotation = entry[0].get(value)
                    append(annotation if annotation is not None else self._intern_value(track, entry, value))
                elif cls is int and 0 <= value <= _I64_MAX:
                    vb = _VT[value] if value < 16384 else varint(value)
                    append(entry[1][len(vb)])     # annotation tag + length, name_iid, int_value tag
                    append(vb)
                else:
                    append(_field(_T_ANNOTATION, entry[2] + self._value_field(key, value)))
            append(begin)
        else:
            parts = [begin]
        if source is not None:
            source_field = track._sources.get(source)
            parts.append(source_field if source_field is not None else self._intern_source(track, source))
        if flow_out is not None or flow_in is not None:
            parts.append(self._flow_fields(ts, flow_out, flow_in))
        te = b"".join(parts) if len(parts) > 1 else begin
        d = ts - last
        tl = len(te)
        vd = _VT_TIMESTAMP[d] if d < 16384 else _T_TIMESTAMP + varint(d)
        vtl = _VT[tl] if tl < 16384 else varint(tl)
        bl = len(vd) + len(seq_te) + len(vtl) + tl
        if track._pending:
            interned = self._take_interned(track)
            bl += len(interned)
            out += (_VT_PACKET[bl] if bl < 16384 else _T_PACKET + varint(bl), vd, seq_te, vtl, te, interned)
        else:
            out += (_VT_PACKET[bl] if bl < 16384 else _T_PACKET + varint(bl), vd, seq_te, vtl, te)
        track._last_ts = ts
        ends.append(end)
        self._n_slices += 1
        if len(out) >= self._flush_pieces:
            self._flush()
        return True

    def add_slices(self, track: Track, ts_ns, dur_ns, names, args: dict | None = None, sources=None,
                   flow_out=None, flow_in=None) -> int:
        """Add many slices to one track at once, given as columns: the fast way to export a timeline.

        ts_ns, dur_ns: sequences of int ns (lists, tuples, 1-D integer numpy arrays); names: a sequence
        of str, or one str for all; args: {arg name: sequence of values, None where a slice lacks that
        arg}; sources, flow_out, flow_in: sequences (None entries allowed) as in add_slice. Same rules
        as calling add_slice for each row in order; returns how many slices were written (the rest
        were dropped by max_slices).
        """
        self._check_open()
        self._check_track(track, _SLICE_KIND, "add_slices")
        ts, dur = _int_column(ts_ns, "ts_ns"), _int_column(dur_ns, "dur_ns")
        n = len(ts)
        names = [names] * n if isinstance(names, str) else _column(names, n, "names")
        columns = {key: _column(col, n, f"args[{key!r}]") for key, col in (args or {}).items()}
        sources = _column(sources, n, "sources") if sources is not None else None
        flow_out = _column(flow_out, n, "flow_out") if flow_out is not None else None
        flow_in = _column(flow_in, n, "flow_in") if flow_in is not None else None
        if len(dur) != n:
            raise TraceWriterError(f"add_slices: {len(ts)} start times but {len(dur)} durations")
        if n == 0:
            return 0
        room = self._limit - self._n_slices
        if n > room:
            keep = max(0, int(room))
            for i in range(keep, n):
                self._drop(flow_out[i] if flow_out is not None else None)
            if keep == 0:
                return 0
            ts, dur, names = ts[:keep], dur[:keep], names[:keep]
            columns = {key: col[:keep] for key, col in columns.items()}
            sources, flow_out, flow_in = (c[:keep] if c is not None else None
                                          for c in (sources, flow_out, flow_in))
            n = keep
        ends = list(map(operator.add, ts, dur))
        flat = (ts[0] >= track._last_ts and min(dur) >= 0
                and not any(map(operator.lt, ts[1:], ends[:-1])))   # each ends before the next starts
        if flat and track._ends and track._ends[-1] > ts[0]:
            flat = max(ends) <= track._ends[-1]     # all inside the enclosing open slice
        if not flat:
            # Nested or out-of-order rows: the per-slice path checks and nests them (or says why not).
            for i in range(n):
                self.add_slice(track, ts[i], dur[i], names[i],
                               {k: col[i] for k, col in columns.items() if col[i] is not None},
                               flow_out[i] if flow_out is not None else None,
                               flow_in[i] if flow_in is not None else None,
                               sources[i] if sources is not None else None)
            return n
        for lo in range(0, n, _BATCH_ROWS):   # bounded memory for the encoded pieces of huge batches
            hi = lo + _BATCH_ROWS
            optional = (c[lo:hi] if c is not None else None for c in (sources, flow_out, flow_in))
            self._write_flat_slices(track, ts[lo:hi], dur[lo:hi], ends[lo:hi], names[lo:hi],
                                    {key: col[lo:hi] for key, col in columns.items()}, *optional)
        return n

    def _write_flat_slices(self, track, ts, dur, ends, names, columns, sources, flow_out, flow_in) -> None:
        """Encode slices that follow one another on a track, with C-level map/zip/join over columns."""
        n = len(ts)
        if track._ends and track._ends[-1] <= ts[0]:
            self._emit_ends(track, ts[0])
        if not track._seq_te:
            self._start_sequence(track)
        begin_of = {}
        for name in set(names):
            if not isinstance(name, str):
                raise TypeError(f"slice names must be str, got {type(name).__name__}")
            begin_of[name] = track._begins.get(name) or self._intern_begin(track, name)
        pieces = []
        for key, col in columns.items():
            pieces += self._annotation_columns(track, key, col)
        pieces.append(list(map(begin_of.__getitem__, names)))
        if sources is not None:
            source_of = {source: track._sources.get(source) or self._intern_source(track, source)
                         for source in set(sources) - {None}}
            source_of[None] = b""
            pieces.append(list(map(source_of.__getitem__, sources)))
        if flow_out is not None or flow_in is not None:
            flow_out, flow_in = flow_out or [None] * n, flow_in or [None] * n
            flows = [b""] * n
            with_flows = compress(range(n), map(operator.or_, map(operator.is_not, flow_out, repeat(None)),
                                                map(operator.is_not, flow_in, repeat(None))))
            for i in with_flows:
                flows[i] = self._flow_fields(ts[i], flow_out[i], flow_in[i])
            pieces.append(flows)
        # Each row becomes BEGIN packet + END packet:
        #   [0x0a][body len][0x40][delta][sequence id][0x5a][event len][event][END packet]
        events = list(map(b"".join, zip(*pieces))) if len(pieces) > 1 else list(pieces[0])
        event_lengths = _varints(list(map(len, events)))
        if track._pending:
            events[0] += self._take_interned(track)   # the interned data rides on the first packet
        deltas = [ts[0] - track._last_ts, *map(operator.sub, ts[1:], ends[:-1])]
        bodies = list(map(b"".join, zip(_varints(deltas, _VT_TIMESTAMP, _T_TIMESTAMP), repeat(track._seq_te),
                                        event_lengths, events)))
        packet_heads = _varints(list(map(len, bodies)), _VT_PACKET, _T_PACKET)
        end_deltas = _varints(dur)
        end_heads = list(map(track._end_heads.__getitem__, map(len, end_deltas)))
        tail = track._end_tail
        data = b"".join(chain.from_iterable(zip(packet_heads, bodies, end_heads, end_deltas, repeat(tail))))
        # The last slice stays open (its END is written later), as after add_slice.
        self._out.append(data[:len(data) - len(end_heads[-1]) - len(end_deltas[-1]) - len(tail)])
        track._ends.append(ends[-1])
        track._last_ts = ts[-1]
        self._n_slices += n
        if n >= 1024 or len(self._out) >= self._flush_pieces:
            self._flush()

    def _annotation_columns(self, track: Track, key: str, column: list) -> list[list[bytes]]:
        """The encoded annotations of one arg column, as one or two columns of byte strings."""
        entry = track._keys.get(key) or self._intern_key(track, key)
        kinds = set(map(type, column))
        has_none = type(None) in kinds
        kinds.discard(type(None))
        if len(kinds) != 1:
            # Mixed types (1, True and 1.0 are equal dict keys, so no value cache here).
            return [[b"" if value is None else self._annotation(track, entry, key, value)
                     for value in column]]
        if kinds == {int} and len(set(column[:64])) > 16:
            # Many distinct ints (a program counter, a wait time): encode each, no cache worth building.
            present = (list(compress(range(len(column)), map(operator.is_not, column, repeat(None))))
                       if has_none else None)
            values = list(map(column.__getitem__, present)) if has_none else column
            if values and min(values) >= 0 and max(values) <= _I64_MAX:
                encoded = _varints(values)
                heads = list(map(entry[1].__getitem__, map(len, encoded)))
                if not has_none:
                    return [heads, encoded]
                head_column, value_column = [b""] * len(column), [b""] * len(column)
                for i, head, value in zip(present, heads, encoded):
                    head_column[i] = head
                    value_column[i] = value
                return [head_column, value_column]
        distinct = set(column)
        distinct.discard(None)
        annotation_of = {value: self._annotation(track, entry, key, value) for value in distinct}
        annotation_of[None] = b""
        return [list(map(annotation_of.__getitem__, column))]

    def _annotation(self, track: Track, entry: tuple, key: str, value) -> bytes:
        """One encoded debug annotation (the general, unhurried path)."""
        if value.__class__ is str:
            return entry[0].get(value) or self._intern_value(track, entry, value)
        if value.__class__ is int and 0 <= value <= _I64_MAX:
            encoded = varint(value)
            return entry[1][len(encoded)] + encoded
        return _field(_T_ANNOTATION, entry[2] + self._value_field(key, value))

    def add_instant(self, track: Track, ts_ns: int, name: str, args: dict | None = None,
                    flow_out=None, flow_in=None, source: tuple | None = None) -> None:
        """Add an instant event (a zero-duration marker) on a slice track or the root track."""
        self._check_track(track, _SLICE_KIND, "add_instant")
        self._check_open()
        ts = _as_int(ts_ns, "ts_ns")
        if ts < track._last_ts:
            self._bad_time(track, ts, 0, name)
        if not isinstance(name, str):
            raise TypeError(f"instant name must be a str, got {type(name).__name__}")
        if track._ends and track._ends[-1] <= ts:
            self._emit_ends(track, ts)
        if not track._seq_te:
            self._start_sequence(track)
        name_field = track._names.get(name) or self._intern_name(track, name)
        parts = self._encode_args(track, args) if args else []
        parts += (_TYPE_INSTANT, name_field)
        if source is not None:
            parts.append(track._sources.get(source) or self._intern_source(track, source))
        if flow_out is not None or flow_in is not None:
            parts.append(self._flow_fields(ts, flow_out, flow_in))
        te = b"".join(parts)
        body = _T_TIMESTAMP + varint(ts - track._last_ts) + track._seq_te + varint(len(te)) + te
        if track._pending:
            body += self._take_interned(track)
        self._out.append(_T_PACKET + varint(len(body)) + body)
        track._last_ts = ts
        self._n_instants += 1
        if len(self._out) >= self._flush_pieces:
            self._flush()

    def add_counter(self, counter: Track, ts_ns: int, value: int | float) -> None:
        """Add one sample to a counter track; samples on a track must arrive in timestamp order."""
        if counter.__class__ is not Track or counter._owner is not self or counter.kind is not _COUNTER_KIND:
            self._check_track(counter, _COUNTER_KIND, "add_counter")
        ts = ts_ns if ts_ns.__class__ is int else _as_int(ts_ns, "ts_ns")
        if ts < counter._last_ts:
            self._bad_time(counter, ts, 0, "counter sample")
        if self._closed:
            self._check_open()
        cls = value.__class__
        if cls is float:
            field = _T_COUNTER_DOUBLE + _DOUBLE.pack(value)
        elif cls is int and 0 <= value <= _I64_MAX:
            field = _T_COUNTER_INT + varint(value)
        else:
            field = self._counter_field(value)
        seq_te = counter._seq_te
        if not seq_te:
            self._start_sequence(counter)
            seq_te = counter._seq_te
        te = _TYPE_COUNTER + field
        d = ts - counter._last_ts
        body = b"".join((_VT_TIMESTAMP[d] if d < 16384 else _T_TIMESTAMP + varint(d), seq_te,
                         _VT[len(te)], te))
        out = self._out
        out += (_VT_PACKET[len(body)], body)
        counter._last_ts = ts
        self._n_counters += 1
        if len(out) >= self._flush_pieces:
            self._flush()

    @staticmethod
    def _counter_field(value) -> bytes:
        if isinstance(value, bool) or value.__class__.__name__ == "bool_":
            raise TypeError("counter value must be a number, got a bool")
        if isinstance(value, float) or (not hasattr(value, "__index__") and hasattr(value, "__float__")):
            return _T_COUNTER_DOUBLE + _DOUBLE.pack(float(value))
        value = _as_int(value, "counter value")
        if not _I64_MIN <= value <= _I64_MAX:
            raise TraceWriterError(f"counter value {value} does not fit in int64")
        return _T_COUNTER_INT + varint(value & _U64)

    # ------------------------------------------------------------------ encoding
    def _encode_args(self, track: Track, args) -> list[bytes]:
        """Encoded debug annotations, one per arg (add_slice inlines the same for speed)."""
        try:
            items = args.items()
        except AttributeError:
            raise TypeError(f"args must be a dict, got {type(args).__name__}") from None
        keys = track._keys
        return [self._annotation(track, keys.get(key) or self._intern_key(track, key), key, value)
                for key, value in items]

    @staticmethod
    def _value_field(key: str, value) -> bytes:
        if isinstance(value, bool) or value.__class__.__name__ == "bool_":
            return _T_ANN_BOOL + (b"\x01" if value else b"\x00")
        if isinstance(value, str):
            return _field(_T_ANN_STRING, value.encode())
        if isinstance(value, float):
            return _T_ANN_DOUBLE + _DOUBLE.pack(value)
        if hasattr(value, "__index__"):
            v = operator.index(value)
            if v < 0:
                if v < _I64_MIN:
                    raise TraceWriterError(f"arg {key!r} = {v} does not fit in int64")
                return _T_ANN_INT + varint(v & _U64)
            if v > _U64:
                raise TraceWriterError(f"arg {key!r} = {v} does not fit in uint64")
            return (_T_ANN_INT if v <= _I64_MAX else _T_ANN_UINT) + varint(v)
        if hasattr(value, "__float__"):
            return _T_ANN_DOUBLE + _DOUBLE.pack(float(value))
        raise TypeError(f"arg {key!r} must be str, int, float or bool, got {type(value).__name__}")

    def _new_iid(self, track: Track, table: int, entry_without_iid: bytes) -> int | None:
        """Assign the next iid of an InternedData table and queue its entry; None if the tables are full."""
        if track._interned >= MAX_INTERNED_PER_SEQUENCE:
            return None
        iid = track._next_iid[table]
        track._next_iid[table] = iid + 1
        track._interned += 1
        track._pending.append((table, _field(_INTERN_TAGS[table], _T_IID + varint(iid) + entry_without_iid)))
        return iid

    def _intern_name(self, track: Track, name: str) -> bytes:
        iid = self._new_iid(track, _INTERN_EVENT_NAME, _field(_T_IID_STR, name.encode()))
        if iid is None:
            return _field(_T_NAME, name.encode())
        field = _T_NAME_IID + varint(iid)
        track._names[name] = field
        return field

    def _intern_begin(self, track: Track, name: str) -> bytes:
        name_field = track._names.get(name) or self._intern_name(track, name)
        begin = _TYPE_BEGIN + name_field
        if name in track._names:
            track._begins[name] = begin
        return begin

    def _intern_key(self, track: Track, key) -> tuple:
        if not isinstance(key, str):
            raise TypeError(f"arg names must be str, got {type(key).__name__} {key!r}")
        iid = self._new_iid(track, _INTERN_ANN_NAME, _field(_T_IID_STR, key.encode()))
        name_field = _field(_T_ANN_NAME, key.encode()) if iid is None else _T_ANN_NAME_IID + varint(iid)
        int_heads = [b""] + [_field(_T_ANNOTATION, name_field + _T_ANN_INT + b"\0" * n)[:-n]
                             for n in range(1, 11)]
        entry = ({}, int_heads, name_field)
        if iid is not None:
            track._keys[key] = entry
        return entry

    def _intern_value(self, track: Track, entry: tuple, value: str) -> bytes:
        iid = self._new_iid(track, _INTERN_STRING_VALUE, _field(_T_IID_STR, value.encode()))
        if iid is None:
            return _field(_T_ANNOTATION, entry[2] + _field(_T_ANN_STRING, value.encode()))
        annotation = _field(_T_ANNOTATION, entry[2] + _T_ANN_STRING_IID + varint(iid))
        entry[0][value] = annotation
        return annotation

    def _intern_source(self, track: Track, source) -> bytes:
        try:
            file_name, function_name, line = source
        except (TypeError, ValueError):
            raise TypeError(f"source must be (file_name, function_name, line_number), "
                            f"got {source!r}") from None
        if not isinstance(file_name, str) or not isinstance(function_name, str):
            raise TypeError(f"source file and function names must be str, got {source!r}")
        line = _as_int(line, "source line_number")
        if not 0 <= line < (1 << 32):
            raise TraceWriterError(f"source line_number must fit in uint32, got {line}")
        location = (_field(_T_SRC_FILE, file_name.encode()) + _field(_T_SRC_FUNCTION, function_name.encode())
                    + _T_SRC_LINE + varint(line))
        iid = self._new_iid(track, _INTERN_SOURCE, location)
        if iid is None:
            return _field(_T_SOURCE, location)    # tables full: inline, not cached
        field = _T_SOURCE_IID + varint(iid)
        track._sources[source] = field
        return field

    @staticmethod
    def _take_interned(track: Track) -> bytes:
        # InternedData fields in field-number order (the order the protobuf classes write them in).
        pending = sorted(track._pending, key=lambda item: item[0])
        track._pending = []
        return _field(_T_INTERNED, b"".join(entry for _, entry in pending))

    def _emit_ends(self, track: Track, until_ts: int | None) -> None:
        ends, heads, tail = track._ends, track._end_heads, track._end_tail
        out = self._out
        last = track._last_ts
        while ends and (until_ts is None or ends[-1] <= until_ts):
            end = ends.pop()
            vd = varint(end - last)
            out += (heads[len(vd)], vd, tail)
            last = end
        track._last_ts = last

    def _start_sequence(self, track: Track) -> None:
        seq_id = self._next_seq
        self._next_seq += 1
        packet = pb.TracePacket(timestamp=0, timestamp_clock_id=BOOTTIME_CLOCK_ID,
                                trusted_packet_sequence_id=seq_id,
                                sequence_flags=pb.TracePacket.SEQ_INCREMENTAL_STATE_CLEARED,
                                first_packet_on_sequence=True)
        defaults = packet.trace_packet_defaults
        defaults.timestamp_clock_id = INCREMENTAL_CLOCK_ID
        defaults.track_event_defaults.track_uuid = track.uuid
        # Every sequence ties its clock to BOOTTIME = 0, so all snapshots agree: trace time = device ns.
        packet.clock_snapshot.clocks.add(clock_id=BOOTTIME_CLOCK_ID, timestamp=0)
        packet.clock_snapshot.clocks.add(clock_id=INCREMENTAL_CLOCK_ID, timestamp=0, is_incremental=True)
        self._append_packet(packet.SerializeToString())
        track._seq = _T_SEQUENCE + varint(seq_id)
        track._seq_te = track._seq + _T_TRACK_EVENT
        track._end_tail = track._seq_te + varint(len(_TYPE_END)) + _TYPE_END
        # END packet = header(body length) + timestamp tag + delta varint + tail; body length depends
        # only on the delta's varint length n.
        track._end_heads = [b""] + [_T_PACKET + varint(1 + n + len(track._end_tail)) + _T_TIMESTAMP
                                    for n in range(1, 11)]
        track._last_ts = 0

    def _append_packet(self, packet_bytes: bytes) -> None:
        self._out.append(_T_PACKET + varint(len(packet_bytes)) + packet_bytes)
        self._n_other_packets += 1

    # ------------------------------------------------------------------ flows and drops
    def _flow_fields(self, ts: int, flow_out, flow_in) -> bytes:
        parts = []
        if flow_out is not None:
            for fid in _flow_ids(flow_out, "flow_out"):
                if fid in self._open_flows:
                    raise TraceWriterError(f"flow id {fid} already started and has not ended yet")
                if fid in self._early_ends:
                    if self._early_ends[fid] < ts:
                        raise TraceWriterError(f"flow {fid} would end (at {self._early_ends[fid]}) "
                                               f"before it starts (at {ts})")
                    del self._early_ends[fid]
                    self._n_flows += 1
                else:
                    self._open_flows[fid] = ts
                parts.append(_T_FLOW_OUT + _FIXED64.pack(fid))
        if flow_in is not None:
            for fid in _flow_ids(flow_in, "flow_in"):
                if fid in self._dropped_flow_ids:
                    self._dropped_flow_ids.discard(fid)   # its origin was dropped: nothing to end
                    continue
                start = self._open_flows.get(fid)
                if start is None:
                    self._early_ends[fid] = ts
                elif start > ts:
                    raise TraceWriterError(f"flow {fid} would end (at {ts}) before it starts (at {start})")
                else:
                    del self._open_flows[fid]
                    self._n_flows += 1
                parts.append(_T_FLOW_IN + _FIXED64.pack(fid))
        return b"".join(parts)

    def _drop(self, flow_out) -> None:
        self._dropped += 1
        if flow_out is not None:
            self._dropped_flow_ids.update(_flow_ids(flow_out, "flow_out"))

    # ------------------------------------------------------------------ checks
    def _check_track(self, track, kind: str, what: str) -> None:
        if not isinstance(track, Track) or track._owner is not self:
            raise TraceWriterError(f"{what}: {track!r} is not a track declared on this writer")
        if track.kind != kind:
            raise TraceWriterError(f"{what}: track {track.name!r} is a {track.kind} track, "
                                   f"not a {kind} track")

    def _bad_time(self, track: Track, ts: int, dur: int, name) -> None:
        if ts < 0:
            raise TraceWriterError(f"{name!r} on track {track.name!r} has negative timestamp {ts}")
        if dur < 0:
            raise TraceWriterError(f"{name!r} on track {track.name!r} has negative duration {dur}")
        raise TraceWriterError(f"{name!r} on track {track.name!r} starts at {ts}, before the previous "
                               f"event on that track ({track._last_ts}): events on a track must "
                               f"arrive in timestamp order")

    def _check_open(self) -> None:
        if self._closed:
            raise TraceWriterError(f"trace writer for {self.path} is already closed")

    # ------------------------------------------------------------------ finishing
    def _flush(self) -> None:
        if self._out:
            data = b"".join(self._out)
            self._out.clear()
            self._file.write(data)
            self._raw_bytes += len(data)

    def _end_of_trace(self) -> int:
        latest = 0
        for track in self._tracks:
            latest = max(latest, track._last_ts, track._ends[0] if track._ends else 0)
        return latest

    def close(self) -> TraceStats:
        """Close every open slice, write the closing markers, flush, and report what was written."""
        if self._stats is not None:
            return self._stats
        end_ts = self._end_of_trace()
        unpaired = len(self._open_flows) + len(self._early_ends)
        if self._dropped:
            self.add_instant(self.root, end_ts, DROPPED_EVENT_NAME,
                             {"dropped_slices": self._dropped, "max_slices": self._max_slices})
        if self._open_flows:
            # Flows whose receiving slice never came (dropped, or never added) end here, visibly.
            ids = sorted(self._open_flows)
            self._open_flows.clear()
            self.add_instant(self.root, end_ts, UNPAIRED_FLOWS_EVENT_NAME, {"flows": len(ids)},
                             flow_in=ids)
        for track in self._tracks:
            if track._ends:
                self._emit_ends(track, None)
        self._flush()
        self._closed = True
        for track in self._tracks:
            track._slice_owner = None
        if self._file is not self._raw_file:
            self._file.close()
        self._raw_file.close()
        self._stats = TraceStats(
            path=str(self.path), slices=self._n_slices, instants=self._n_instants,
            counters=self._n_counters, flows=self._n_flows, dropped=self._dropped,
            unpaired_flows=unpaired, tracks=len(self._tracks), sequences=self._next_seq - 1,
            packets=self._n_other_packets + 2 * self._n_slices + self._n_instants + self._n_counters,
            raw_bytes=self._raw_bytes, bytes=self.path.stat().st_size)
        return self._stats

    def __enter__(self) -> "TraceWriter":
        return self

    def __exit__(self, *exc) -> None:
        # Also on an exception: a partial run still yields a valid trace.
        self.close()
