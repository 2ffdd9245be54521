"""replay-check (bench/replay_check.py): its input is the same bytes whenever it is made, and a comparison
names what differs. The replay and the dumps run against a real PostgreSQL: `python -m bench replay-check`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.replay_check import differences, input_digest, load_input, replay_input, save_input

# Made in a fresh interpreter: string hashing is salted per process, so a mix that leaned on hash()
# would differ between two commits' runs even with nothing changed.
_DIGEST_IN_ANOTHER_PROCESS = (
    "from bench.replay_check import input_digest, replay_input; print(input_digest(replay_input(400)))"
)


def test_the_input_is_the_same_bytes_in_another_process_and_another_day() -> None:
    records = replay_input(400)
    assert len(records) == 400
    assert len({value for _, value in records}) == 400  # 400 distinct events, not one repeated
    elsewhere = subprocess.run(
        [sys.executable, "-c", _DIGEST_IN_ANOTHER_PROCESS],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
        env={"PYTHONHASHSEED": "12345", "PATH": "/usr/bin:/bin"},
    ).stdout.strip()
    assert elsewhere == input_digest(records)
    # Fixed event and receive times: nothing of today's date in the events.
    assert all(b'"received_at":"2026-01-09T00:00:00Z"' in value for _, value in records)


def test_the_input_digest_sees_a_single_byte() -> None:
    records = replay_input(50)
    key, value = records[10]
    changed = [*records[:10], (key, value.replace(b"demo", b"dem0", 1)), *records[11:]]
    assert input_digest(changed) != input_digest(records)


def test_a_saved_input_is_read_back_byte_for_byte(tmp_path: Path) -> None:
    records = [*replay_input(30), (b"", b""), (b"k", b"\x00\xff" * 300)]
    save_input(records, tmp_path / "input.bin")
    assert load_input(tmp_path / "input.bin") == records


def _result(**tables: str) -> dict[str, Any]:
    return {
        "input": {"events": 10, "sha256": "i", "batch": 5},
        "tables": {name: {"rows": 1, "sha256": sha} for name, sha in tables.items()},
    }


def test_a_comparison_names_each_table_that_differs() -> None:
    before = _result(profiles="a", outbox="b", timers="c")
    assert differences(before, _result(profiles="a", outbox="b", timers="c")) == []
    found = differences(before, _result(profiles="a", outbox="x", timers="c"))
    assert len(found) == 1
    assert found[0].startswith("outbox:")
    assert differences(before, _result(profiles="a", outbox="b"))[0].startswith("timers:")


def test_a_table_only_one_side_has_is_the_same_state_when_empty() -> None:
    """A migration between the two runs added a table: empty, it holds the same state; with rows, not."""
    before = _result(profiles="a")
    after = _result(profiles="a")
    after["tables"]["forgotten_identities"] = {"rows": 0, "sha256": "e"}
    assert differences(before, after) == differences(after, before) == []
    after["tables"]["forgotten_identities"] = {"rows": 1, "sha256": "f"}
    assert differences(before, after)[0].startswith("forgotten_identities:")
