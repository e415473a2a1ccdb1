"""Each hand-written faulty program in samples/programs/ is found by its check, naming the right
engines, instructions and operands; the same program with the fault fixed is clean; the correct
programs are clean."""
from __future__ import annotations

import pytest
from sanitize_util import program_text, sanitize_text, sides, summary

from device_model.assembly import assemble
from xputools.debug.sanitize import sanitize
from xputools.runtime import random_inputs


def test_gemm512_is_clean():
    report = sanitize_text(program_text("gemm512.xasm"))
    assert report.clean and report.completed
    assert report.instructions == 32


def test_race_war_names_the_read_and_the_overwriting_load():
    report = sanitize_text(program_text("race_war.xasm"))
    assert summary(report) == [("race", "WAR")]
    race = report.findings[0]
    assert sides(race) == [("dve", 0, "src"), ("dma1", 0, "dst")]
    assert [a.access for a in race.accesses] == ["read", "write"]
    assert race.accesses[0].bytes == "sbuf partitions 0..127 bytes 0x0..0xff"
    assert race.debug == ["break dma1:0", "run"]


def test_race_war_fixed_is_clean():
    text = program_text("race_war.xasm").replace("wait=s0>=1 signal=s2+=1", "wait=s1>=1 signal=s2+=1")
    assert sanitize_text(text).clean


def test_race_is_found_only_by_the_race_check():
    assert sanitize_text(program_text("race_war.xasm"), "uninit,bounds,nan,hang,sync").clean


def test_uninit_psum_names_the_accumulating_matmul():
    report = sanitize_text(program_text("uninit_psum.xasm"))
    assert summary(report) == [("uninit", "uninit-read")]
    assert sides(report.findings[0]) == [("pe", 0, "dst")]
    assert report.findings[0].accesses[0].bytes == "psum partitions 0..127 bytes 0x0..0xff"


def test_uninit_psum_fixed_is_clean():
    assert sanitize_text(program_text("uninit_psum.xasm").replace("start=0", "start=1")).clean


def test_uninit_partial_write_reports_only_the_missing_partitions():
    text = """.arch xpu1
.tensor input x @0x0 shape=64x16 dtype=f32
.tensor output y @0x1000 shape=128x16 dtype=f32
dma0 dma_copy dst=sbuf[0:+64]@0x0{1:16}:f32 src=hbm@0x0{16:64,1:16}:f32 signal=s0+=1
dve copy dst=sbuf[0:+128]@0x100{1:16}:f32 src=sbuf[0:+128]@0x0{1:16}:f32 wait=s0>=1 signal=s1+=1
dma1 dma_copy dst=hbm@0x1000{16:128,1:16}:f32 src=sbuf[0:+128]@0x100{1:16}:f32 wait=s1>=1
"""
    report = sanitize_text(text)
    assert summary(report) == [("uninit", "uninit-read")]
    assert sides(report.findings[0]) == [("dve", 0, "src")]
    assert report.findings[0].accesses[0].bytes == "sbuf partitions 64..127 bytes 0x0..0x3f"


def test_tensor_overrun_names_both_tensors():
    report = sanitize_text(program_text("tensor_overrun.xasm"))
    assert summary(report) == [("bounds", "tensor")]
    finding = report.findings[0]
    assert sides(finding) == [("dma0", 0, "src")]
    assert "touches x 0x0..0x7fff, scale 0x8000..0x81ff" in finding.message


def test_tensor_overrun_fixed_is_clean():
    text = program_text("tensor_overrun.xasm").replace("1:65}", "1:64}")
    assert sanitize_text(text).clean


def test_out_of_memory_bounds_is_reported_before_the_fault():
    report = sanitize_text(program_text("out_of_bounds.xasm"))
    assert summary(report) == [("bounds", "memory")]
    assert sides(report.findings[0]) == [("dve", 0, "src")]
    assert not report.completed  # the run still faults at that instruction, reported once


def test_out_of_memory_without_the_bounds_check_is_a_fault_finding():
    report = sanitize_text(program_text("out_of_bounds.xasm"), "race,uninit")
    assert summary(report) == [("fault", "fault")]
    assert sides(report.findings[0]) == [("dve", 0, None)]


def test_nan_names_where_nan_is_born_and_what_it_read():
    report = sanitize_text(program_text("nan_log.xasm"))
    assert summary(report) == [("nan", "nan")]
    finding = report.findings[0]
    assert sides(finding) == [("act", 0, "dst")]
    assert "from finite inputs (src: range [" in finding.message


def test_nan_does_not_blame_instructions_that_only_pass_it_on():
    text = program_text("nan_log.xasm").replace(
        "store: dma1", "relu:  act activate dst=sbuf[0:+128]@0x800{1:64}:f32 src=sbuf[0:+128]@0x400{1:64}:f32 "
        "func=relu mode=exact wait=s1>=1 signal=s1+=1\nstore: dma1")
    report = sanitize_text(text)
    assert [sides(f) for f in report.findings] == [[("act", 0, "dst")]]


def test_nan_from_a_finite_program_is_clean():
    assert sanitize_text(program_text("nan_log.xasm").replace("func=log", "func=exp")).clean


def test_lost_signal_hangs_and_names_the_wait_no_signal_can_meet():
    report = sanitize_text(program_text("lost_signal.xasm"))
    assert summary(report) == [("sync", "under-signalled"), ("hang", "unsatisfiable-wait")]
    sync, hang = report.findings
    assert sides(sync) == [("dve", 0, None), ("dma0", 0, None)]
    assert sync.debug == ["run", "info hang", "info sems"]
    assert [a.engine for a in hang.accesses] == ["dve", "dma2"]
    assert "no remaining instruction signals it" in hang.message
    assert not report.completed


def test_deadlock_names_the_cycle():
    report = sanitize_text(program_text("deadlock.xasm"))
    assert summary(report) == [("hang", "deadlock")]
    assert [a.engine for a in report.findings[0].accesses] == ["pe", "act", "dma0"]
    assert "deadlock cycle: pe -> act -> pe" in report.findings[0].message
    assert report.findings[0].debug == ["run", "info hang"]


def test_over_signalled_names_the_signal_and_the_waits_it_confuses():
    report = sanitize_text(program_text("over_signalled.xasm"))
    assert summary(report) == [("sync", "over-signalled"), ("race", "RAW")]
    sync, race = report.findings
    assert sides(sync) == [("dma0", 0, None), ("act", 0, None), ("dve", 0, None)]
    assert sync.debug == ["watch s0", "run"]
    # the consequence: nothing orders load_b's write before the add's read of b
    assert sides(race) == [("dma1", 0, "dst"), ("dve", 0, "b")]


def test_over_signalled_fixed_is_clean():
    assert sanitize_text(program_text("over_signalled.xasm").replace("s0+=2", "s0+=1")).clean


def test_never_signalled_semaphore():
    text = program_text("lost_signal.xasm").replace("wait=s0>=2", "wait=s9>=1")
    report = sanitize_text(text, "sync")
    assert summary(report) == [("sync", "never-signalled"), ("hang", "unsatisfiable-wait")]


@pytest.mark.parametrize("checks", ["race", "uninit", "bounds", "nan", "sync", "hang"])
def test_each_check_alone_is_clean_on_gemm(checks):
    report = sanitize_text(program_text("gemm512.xasm"), checks)
    assert report.clean and report.checks == (checks,)


def test_same_program_same_findings():
    a = sanitize_text(program_text("over_signalled.xasm"), seed=3)
    b = sanitize_text(program_text("over_signalled.xasm"), seed=3)
    assert [f.to_json() for f in a.findings] == [f.to_json() for f in b.findings]


SHARED_COUNT = """.arch xpu1
.tensor input a @0x0 shape=128x64 dtype=f32
.tensor input b @0x8000 shape=128x64 dtype=f32
.tensor output y @0x10000 shape=128x64 dtype=f32
dma0 dma_copy dst=sbuf[0:+128]@0x0{1:64}:f32 src=hbm@0x0{64:128,1:64}:f32 signal=s0+=1
dma1 dma_copy dst=sbuf[0:+128]@0x400{1:64}:f32 src=hbm@0x8000{64:128,1:64}:f32 signal=s0+=1
dve tensor_scalar dst=sbuf[0:+128]@0x800{1:64}:f32 src=sbuf[0:+128]@0x0{1:64}:f32 op0=mul s0=2.0 wait=s0>=1
dve tensor_tensor dst=sbuf[0:+128]@0x800{1:64}:f32 a=sbuf[0:+128]@0x800{1:64}:f32 b=sbuf[0:+128]@0x400{1:64}:f32 \
op=add wait=s0>=2 signal=s1+=1
dma2 dma_copy dst=hbm@0x10000{64:128,1:64}:f32 src=sbuf[0:+128]@0x800{1:64}:f32 wait=s1>=1
"""


def test_jitter_exposes_a_wait_that_another_signal_can_satisfy_first():
    # s0 >= 1 is meant as "a is loaded", but b's load also counts on s0: in this run a finishes
    # first (clean), under other timings b does and DVE reads a unordered with its load
    assert sanitize_text(SHARED_COUNT, "race").clean
    program = assemble(SHARED_COUNT)
    report = sanitize(program, random_inputs(program, 0), "race", jitter=6)
    assert summary(report) == [("race", "RAW")]
    assert sides(report.findings[0]) == [("dma0", 0, "dst"), ("dve", 0, "src")]
    assert report.findings[0].jitter_seed is not None
    assert "timing jitter seed" in report.findings[0].message


def test_gemm512_stays_clean_under_jitter():
    program = assemble(program_text("gemm512.xasm"))
    assert sanitize(program, random_inputs(program, 0), "race,uninit", jitter=6).clean


def test_progress_is_reported_for_every_run(monkeypatch):
    from xputools.debug.sanitize import core

    monkeypatch.setattr(core._Counter, "EVERY", 8)
    program = assemble(program_text("gemm512.xasm"))
    seen = []
    sanitize(program, random_inputs(program, 0), "race", jitter=1, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(8 * i, 64) for i in range(1, 9)]  # 32 instructions, twice


@pytest.mark.parametrize("name", ["race_war", "uninit_psum", "tensor_overrun", "nan_log", "lost_signal",
                                  "deadlock", "over_signalled"])
def test_every_debug_command_of_a_finding_runs_in_the_debugger_and_stops_there(name):
    from xputools.debug.commands import Commands
    from xputools.debug.core import Debugger

    program = assemble(program_text(f"{name}.xasm"))
    feeds = random_inputs(program, 0)
    report = sanitize(program, feeds)
    assert report.findings
    for finding in report.findings:
        commands = Commands(Debugger(program, feeds))
        results = [commands.execute(line) for line in finding.debug]
        for line, result in zip(finding.debug, results):
            assert result is not None and (result.ok or result.command == "run"), (line, result.error)
        stop = results[finding.debug.index("run")].data
        if finding.check == "hang" or finding.debug[0] == "run":
            assert stop.reason == "hang"
        elif finding.debug[0].startswith("watch"):  # watch sN: stops at the over-signalling instruction
            first = finding.accesses[0]
            assert (stop.reason, stop.engine, stop.index) == ("watchpoint", first.engine, first.index)
        else:  # break ENGINE:INDEX: stops right before the instruction the finding names
            where = finding.debug[0].split()[1]
            assert (stop.reason, f"{stop.engine}:{stop.index}") == ("breakpoint", where)
            assert where in [f"{a.engine}:{a.index}" for a in finding.accesses]
