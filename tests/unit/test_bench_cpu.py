"""The CPU a benchmark window cost each part of the stack (bench/cpu.py): /proc's text read as proc(5)
describes it, each process tree summed, and the figures the report derives from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.cpu import (
    TICKS_PER_S,
    CpuSample,
    ProcStat,
    parse_machine_stat,
    parse_pid_stat,
    per_event,
    process_seconds,
    sample,
    tree_ticks,
)
from bench.report import figures

# proc(5) fields 14-17 are utime, stime, cutime, cstime (clock ticks); a captured line, its times set.
_CAT = (
    "30693 (cat) R 30691 30691 25604 0 -1 4194304 99 0 0 0 {u} {s} {cu} {cs} 20 0 1 0 4207464 3133440 365 "
    "18446744073709551615 94056510234624 94056510254505 140736443750944 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0"
)


def _line(pid: int, ppid: int, comm: str, u: int, s: int, cu: int = 0, cs: int = 0) -> str:
    line = _CAT.format(u=u, s=s, cu=cu, cs=cs)
    return line.replace("30693 (cat) R 30691", f"{pid} ({comm}) S {ppid}", 1)


def test_a_process_line_gives_its_parent_its_own_time_and_its_reaped_childrens() -> None:
    assert parse_pid_stat(_line(30693, 30691, "cat", 7, 3, 20, 5)) == ProcStat(30693, 30691, 10, 25)


def test_a_command_with_spaces_and_parentheses_does_not_shift_the_fields() -> None:
    # A process may name itself anything: the fields are counted from the last ')'.
    stat = parse_pid_stat(_line(42, 1, "postgres: loyalty (idle) x) y", 11, 2, 0, 1))
    assert stat == ProcStat(42, 1, 13, 1)


def test_a_line_without_a_command_is_refused() -> None:
    with pytest.raises(ValueError, match="not a /proc/PID/stat line"):
        parse_pid_stat("garbage")


def test_the_machine_is_busy_except_when_idle_or_waiting_for_io() -> None:
    # user nice system idle iowait irq softirq steal guest guest_nice: guest is inside user already.
    text = "cpu  3070230 1974 401187 4758692 78530 0 43326 1233 99 0\ncpu0 1 2 3 4 5 6 7 8 9 0\n"
    busy, every = parse_machine_stat(text)
    assert every == 3070230 + 1974 + 401187 + 4758692 + 78530 + 0 + 43326 + 1233
    assert busy == every - 4758692 - 78530


def test_proc_stat_without_the_machine_line_is_refused() -> None:
    with pytest.raises(ValueError, match="no 'cpu ' line"):
        parse_machine_stat("cpu0 1 2 3 4 5 6 7 8\n")


def test_a_tree_holds_every_live_descendant_and_the_children_each_reaped() -> None:
    stats = [
        ProcStat(100, 1, own=10, children=40),  # the postmaster: 40 from backends that ended
        ProcStat(101, 100, own=5, children=0),  # a backend
        ProcStat(102, 100, own=7, children=0),
        ProcStat(103, 102, own=2, children=1),  # a grandchild
        ProcStat(200, 1, own=1000, children=0),  # another process altogether
    ]
    assert tree_ticks(100, stats) == 10 + 40 + 5 + 7 + 2 + 1
    assert tree_ticks(200, stats) == 1000
    assert tree_ticks(999, stats) == 0  # gone


def test_per_event_is_the_trees_cpu_over_the_window_and_the_idle_share() -> None:
    first = CpuSample(machine_busy=1000, machine_all=4000, trees={"segmenter": 50, "postgres": 20})
    last = CpuSample(machine_busy=1300, machine_all=4400, trees={"segmenter": 150, "postgres": 45})
    found = per_event(first, last, events=20_000, ticks_per_s=100)
    assert found["segmenter_us_per_event"] == pytest.approx(1e6 / 20_000)  # 100 ticks: one CPU second
    assert found["postgres_us_per_event"] == pytest.approx(0.25e6 / 20_000)
    assert found["idle_share"] == pytest.approx(0.25)  # 300 of the window's 400 ticks busy
    assert per_event(first, last, events=0) == {}


def test_a_sample_reads_the_trees_from_a_proc_directory(tmp_path: Path) -> None:
    (tmp_path / "stat").write_text("cpu  100 0 50 800 50 0 0 0 0 0\n")
    for pid, ppid, comm, u, s, cu in (
        (10, 1, "postgres", 3, 1, 30),
        (11, 10, "postgres: loyalty x", 6, 0, 0),
        (20, 1, "python", 40, 2, 0),
    ):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "stat").write_text(_line(pid, ppid, comm, u, s, cu))
    (tmp_path / "30").mkdir()  # ended between the listing and the read: no stat file
    (tmp_path / "self").mkdir()  # not a process number
    found = sample({"postgres": [10], "segmenter": [20], "kafka": []}, proc=tmp_path)
    assert found == CpuSample(150, 1000, {"postgres": 3 + 1 + 30 + 6, "segmenter": 42, "kafka": 0})


def test_report_gives_the_cpu_an_event_and_its_ratio_to_pgbenchs_time() -> None:
    cpu = {"segmenter_us_per_event": 50.0, "postgres_us_per_event": 37.0, "kafka_us_per_event": 11.0,
           "idle_share": 0.45}  # fmt: skip
    raw = {
        "segmenter": {
            "segmenter": [{"events_per_s": 15000.0, "cpu": cpu}, {"events_per_s": 14000.0}],
            "limit": [
                {
                    "events_per_s": 1.0,
                    "rows_per_s": 1.0,
                    "pgbench": {"events_per_s": 30000.0, "rows_per_s": 1},
                },
                {
                    "events_per_s": 1.0,
                    "rows_per_s": 1.0,
                    "pgbench": {"events_per_s": 20000.0, "rows_per_s": 1},
                },
            ],
        }
    }
    found = figures(raw)
    # The run without CPU figures (an older result) is left out, not counted as zero.
    assert found["segmenter_cpu_us_per_event"].median == 50.0
    assert found["segmenter_postgres_cpu_us_per_event"].median == 37.0
    assert found["segmenter_kafka_cpu_us_per_event"].median == 11.0
    assert found["segmenter_idle_percent"].median == pytest.approx(45.0)
    # 50 µs of the segmenter's CPU an event against pgbench's 1/30,000 s = 33.3 µs an event.
    assert found["segmenter_cpu_pgbench_ratio"].median == pytest.approx(1.5)
    # pgbench / segmenter = 2.0 in that run, with 45 % of the cores idle: 1.1 had they been busy throughout.
    assert found["segmenter_busy_pgbench_ratio"].median == pytest.approx(1.1)
    assert list(found["segmenter_busy_pgbench_ratio"].runs) == pytest.approx([1.1])
    assert found["segmenter_pgbench_ratio"].low == pytest.approx(1.43, abs=0.01)


def test_a_process_own_seconds_leave_its_children_out(tmp_path: Path) -> None:
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "stat").write_text(_line(7, 1, "python", 30, 20, 500, 500))
    assert process_seconds(7, proc=tmp_path) == pytest.approx(50 / TICKS_PER_S)
