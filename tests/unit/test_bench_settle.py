"""bench/settle.py: a phase of `make bench` starts with the page cache's dirty pages on disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.settle import settle, unwritten_kib

MEMINFO = """MemTotal:       24576000 kB
MemFree:        16222204 kB
Dirty:            607812 kB
Writeback:          1024 kB
WritebackTmp:          7 kB
"""


def test_unwritten_is_dirty_and_writeback_not_writeback_tmp() -> None:
    assert unwritten_kib(MEMINFO) == 607_812 + 1_024


@pytest.mark.parametrize("text", ["", "MemTotal: 1 kB\nDirty: 5 kB\n", "Dirty: x kB\nWriteback: 0 kB\n"])
def test_a_meminfo_without_both_figures_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="Dirty and Writeback"):
        unwritten_kib(text)


def test_settle_says_what_was_unwritten_before_and_after(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(MEMINFO)
    settled = settle(meminfo)
    assert settled["unwritten_kib_before"] == 608_836
    assert settled["unwritten_kib_after"] == 608_836  # the file, not the machine, which sync(2) emptied
    assert settled["seconds"] >= 0


def test_this_machines_meminfo_reads() -> None:
    assert unwritten_kib(Path("/proc/meminfo").read_text()) >= 0
