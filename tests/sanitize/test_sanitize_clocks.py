"""Happens-before from semaphore edges (vector clocks) and the race detector's use of it."""
from __future__ import annotations

from sanitize_util import sanitize_text, sides, summary

from device_model.assembly import parse_ap
from device_model.isa import ENGINE_INDEX
from xputools.debug.sanitize.clocks import VectorClocks
from xputools.debug.sanitize.race import RaceDetector, Touch

PE, ACT, DVE, DMA0 = (ENGINE_INDEX[e] for e in ("pe", "act", "dve", "dma0"))


def test_order_is_transitive_through_a_chain_of_waits():
    vc = VectorClocks(8)
    vc.issued("dma0", 0, ())
    vc.signalled("dma0", 0, 0, 1)
    vc.issued("act", 0, ((0, 1),))
    vc.signalled("act", 0, 1, 1)
    clock = vc.issued("pe", 0, ((1, 1),))
    assert VectorClocks.ordered(DMA0, 0, clock)  # dma0 -> act -> pe
    assert VectorClocks.ordered(ACT, 0, clock)
    assert not VectorClocks.ordered(DMA0, 1, clock)


def test_a_wait_is_released_by_the_signal_that_reached_its_value_only():
    vc = VectorClocks(8)
    vc.issued("dma0", 0, ())
    vc.signalled("dma0", 0, 0, 1)
    vc.issued("act", 0, ())
    vc.signalled("act", 0, 0, 2)
    early = vc.issued("pe", 0, ((0, 1),))  # s0 >= 1 was met by dma0's signal alone
    assert VectorClocks.ordered(DMA0, 0, early)
    assert not VectorClocks.ordered(ACT, 0, early)
    late = vc.issued("dve", 0, ((0, 2),))  # s0 >= 2 needed both
    assert VectorClocks.ordered(DMA0, 0, late) and VectorClocks.ordered(ACT, 0, late)


def test_detector_reports_unordered_overlap_once_and_ignores_disjoint_bytes():
    det = RaceDetector()
    ap = parse_ap("sbuf[0:+64]@0x0{1:64}:f32")
    other_partitions = parse_ap("sbuf[64:+64]@0x0{1:64}:f32")
    interleaved = parse_ap("sbuf[0:+64]@0x4{2:32}:f32")  # odd elements only
    evens = parse_ap("sbuf[0:+64]@0x0{2:32}:f32")
    zero = [0] * len(ENGINE_INDEX)
    assert det.access(Touch(PE, 0, True, "dst", evens), zero) == []
    assert det.access(Touch(DVE, 0, True, "dst", interleaved), zero) == []  # no common byte
    assert det.access(Touch(ACT, 0, True, "dst", other_partitions), zero) == []
    races = det.access(Touch(DMA0, 0, False, "src", ap), zero)
    assert sorted((r.first.engine_id, r.first.index) for r in races) == sorted([(PE, 0), (DVE, 0)])
    assert det.access(Touch(DMA0, 0, False, "src", ap), zero) == []  # the same pair once


def test_ordered_accesses_are_not_races():
    det = RaceDetector()
    ap = parse_ap("hbm@0x0{1:64}:f32")
    det.access(Touch(PE, 0, True, "dst", ap), [0] * len(ENGINE_INDEX))
    clock = [0] * len(ENGINE_INDEX)
    clock[PE] = 1  # pe #0 happens before
    assert det.access(Touch(DVE, 0, False, "src", ap), clock) == []


def test_waw_between_two_dma_queues():
    text = """.arch xpu1
.tensor input x @0x0 shape=128x16 dtype=f32
.tensor output y @0x2000 shape=128x16 dtype=f32
dma0 dma_copy dst=sbuf[0:+128]@0x0{1:16}:f32 src=hbm@0x0{16:128,1:16}:f32 signal=s0+=1
dma1 dma_copy dst=sbuf[0:+128]@0x20{1:16}:f32 src=hbm@0x0{16:128,1:16}:f32 signal=s0+=1
dma2 dma_copy dst=hbm@0x2000{16:128,1:16}:f32 src=sbuf[0:+128]@0x0{1:16}:f32 wait=s0>=2
"""
    report = sanitize_text(text)
    assert summary(report) == [("race", "WAW")]
    assert sides(report.findings[0]) == [("dma0", 0, "dst"), ("dma1", 0, "dst")]
    assert report.findings[0].accesses[0].bytes == "sbuf partitions 0..127 bytes 0x20..0x3f"
