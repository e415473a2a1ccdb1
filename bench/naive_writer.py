"""The baseline for bench_trace_export.py: a Perfetto trace written the way the Perfetto docs show.

One TracePacket per slice begin and per slice end, written with the `perfetto` package's
StreamingTraceProtoBuilder; event and argument names as plain strings; absolute timestamps; one
packet sequence; 64-bit random track uuids ("uuid: 64-bit random number" in Perfetto's
synthetic-track-event reference). Same API as xputools.profile.perfetto_writer.TraceWriter, so the
benchmark feeds both the same events. Used only by the benchmark.
"""
from __future__ import annotations

import os
import random

from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb
from perfetto.trace_builder.proto_builder import StreamingTraceProtoBuilder

SEQUENCE_ID = 1


class NaiveTrack:
    def __init__(self, uuid: int, name: str):
        self.uuid = uuid
        self.name = name


class NaiveTraceWriter:
    def __init__(self, path: str | os.PathLike, metadata: dict | None = None, seed: int = 0):
        self.path = path
        self._file = open(path, "wb")
        self._builder = StreamingTraceProtoBuilder(self._file)
        self._random = random.Random(seed)
        self._slices = self._counters = 0
        self.root = self._declare("XPU device", None, counter=False)
        if metadata:
            self._event(self.root, 0, pb.TrackEvent.TYPE_INSTANT, "trace info", metadata)

    def _declare(self, name: str, parent: NaiveTrack | None, counter: bool) -> NaiveTrack:
        track = NaiveTrack(self._random.getrandbits(63), name)
        packet = self._builder.create_packet()
        packet.track_descriptor.uuid = track.uuid
        packet.track_descriptor.name = name
        if parent is not None:
            packet.track_descriptor.parent_uuid = parent.uuid
        if counter:
            packet.track_descriptor.counter.SetInParent()
        self._builder.write_packet(packet)
        return track

    def add_track(self, name: str, parent: NaiveTrack | None = None) -> NaiveTrack:
        return self._declare(name, parent or self.root, counter=False)

    def add_counter_track(self, name: str, unit: str | None = None,
                          parent: NaiveTrack | None = None) -> NaiveTrack:
        return self._declare(name, parent or self.root, counter=True)

    def _event(self, track, ts, event_type, name=None, args=None, flow_out=None, flow_in=None, source=None):
        packet = self._builder.create_packet()
        packet.timestamp = ts
        packet.trusted_packet_sequence_id = SEQUENCE_ID
        event = packet.track_event
        event.type = event_type
        event.track_uuid = track.uuid
        if name is not None:
            event.name = name
        if args:
            for key, value in args.items():
                annotation = event.debug_annotations.add()
                annotation.name = key
                if isinstance(value, bool):
                    annotation.bool_value = value
                elif isinstance(value, int):
                    annotation.int_value = value
                elif isinstance(value, float):
                    annotation.double_value = value
                else:
                    annotation.string_value = str(value)
        if source is not None:
            event.source_location.file_name = source[0]
            event.source_location.function_name = source[1]
            event.source_location.line_number = source[2]
        if flow_out is not None:
            event.flow_ids.extend([flow_out] if isinstance(flow_out, int) else flow_out)
        if flow_in is not None:
            event.terminating_flow_ids.extend([flow_in] if isinstance(flow_in, int) else flow_in)
        self._builder.write_packet(packet)

    def add_slice(self, track, ts_ns, dur_ns, name, args=None, flow_out=None, flow_in=None, source=None):
        self._event(track, ts_ns, pb.TrackEvent.TYPE_SLICE_BEGIN, name, args, flow_out, flow_in, source)
        self._event(track, ts_ns + dur_ns, pb.TrackEvent.TYPE_SLICE_END)
        self._slices += 1
        return True

    def add_counter(self, track, ts_ns, value):
        packet = self._builder.create_packet()
        packet.timestamp = ts_ns
        packet.trusted_packet_sequence_id = SEQUENCE_ID
        packet.track_event.type = pb.TrackEvent.TYPE_COUNTER
        packet.track_event.track_uuid = track.uuid
        if isinstance(value, int):
            packet.track_event.counter_value = value
        else:
            packet.track_event.double_counter_value = value
        self._builder.write_packet(packet)
        self._counters += 1

    def close(self) -> dict:
        self._file.close()
        return {"slices": self._slices, "counters": self._counters, "bytes": os.path.getsize(self.path)}
