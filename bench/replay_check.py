"""`python -m bench replay-check`: the same state before and after a change (issue 14).

The benchmark's mix (200,000 canonical events by default, made by ingest's own mappers from a fixed seed,
fixed event times and a fixed receive time, so the input is the same bytes on every commit) is handed to
the segmenter's own batch handler (`FunnelProcessor`, the code its consumer runs, decoding included) in
a fixed order and fixed batches, into an empty database migrated by the segmenter's own migrations. Then
every table of the segmenter's schema, the outbox included, is dumped by PostgreSQL itself (`COPY ... TO
STDOUT`, text format, UTC, ISO dates) in a fixed order and hashed.

What a dump leaves out, because it is not state but bookkeeping of when or in what numbering it was
written: columns filled by `now()` (processed_at, updated_at, created_at) and identity numbers (`id` of
transitions and outbox). Their order is kept: transitions are dumped per customer in id order (the order
of a history), outbox rows per key in id order (the order the relay publishes them in).

Timers are not fired and the outbox relay does not run: both go by wall-clock time, so a replay that ran
them would not be the same twice. The consumer's batching by Kafka polls is replaced by fixed batches for
the same reason; each customer's events keep their order, as one partition would.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench.workload import Step, Storefront, canonical
from deploy.devstack.ports import free_ports
from deploy.devstack.postgres import start_postgres
from deploy.devstack.process import StackError, run_checked
from services.segmenter.adapters.event_decoding import decode_storefront_event
from services.segmenter.domain import funnel
from services.segmenter.entrypoints.processor import FunnelProcessor
from services.segmenter.settings import SegmenterSettings
from shared.db import build_engine
from shared.events import encode_event
from shared.stores import StoreRegistry

REPO_ROOT = Path(__file__).resolve().parent.parent
STORES_FILE = REPO_ROOT / "deploy" / "stores.dev.yaml"
# Fixed, so the input does not depend on the day it is made: shoppers from this moment on, every event
# received four days later (after the last of them).
MIX_START = datetime(2026, 1, 5, tzinfo=UTC)
MIX_RECEIVED = datetime(2026, 1, 9, tzinfo=UTC)
SCHEMA = "segmenter"
# Filled by now() when a row is written: when, not what.
VOLATILE_COLUMNS = frozenset({"processed_at", "updated_at", "created_at"})
# Tables keyed by an identity number: dumped in the order that number gives within a customer / a key.
IDENTITY_ORDER = {"transitions": ("store_id", "customer_id", "id"), "outbox": ("topic", "key", "id")}
BATCH: int = SegmenterSettings.model_fields["segmenter_max_batch"].default


def replay_input(count: int) -> list[tuple[bytes, bytes]]:
    """(key, value) of each canonical event of the mix: 3 Segment-sourced to 1 Shopify-sourced, in time
    order, like the benchmark's pre-filled topic but from fixed times."""
    store = Storefront(seed=21, run="replay", start=MIX_START)
    steps: list[Step] = [*store.segment_calls(count * 3 // 4), *store.shopify_webhooks(count // 4)]
    steps.sort(key=lambda s: s.at)
    events = canonical(steps, received_at=MIX_RECEIVED)[:count]
    return [(e.partition_key.encode(), encode_event(e)) for e in events]


def _framed(records: Sequence[tuple[bytes, bytes]]) -> Iterator[bytes]:
    for key, value in records:
        yield len(key).to_bytes(4, "big") + key + len(value).to_bytes(4, "big") + value


def input_digest(records: Sequence[tuple[bytes, bytes]]) -> str:
    digest = hashlib.sha256()
    for frame in _framed(records):
        digest.update(frame)
    return digest.hexdigest()


def save_input(records: Sequence[tuple[bytes, bytes]], path: Path) -> None:
    """The records as length-prefixed keys and values: another commit can replay these very bytes (when
    it changed how ingest makes or encodes events, its own input would differ)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(_framed(records)))


def load_input(path: Path) -> list[tuple[bytes, bytes]]:
    data = path.read_bytes()
    records: list[tuple[bytes, bytes]] = []
    at = 0
    while at < len(data):
        size = int.from_bytes(data[at : at + 4], "big")
        key = data[at + 4 : at + 4 + size]
        at += 4 + size
        size = int.from_bytes(data[at : at + 4], "big")
        value = data[at + 4 : at + 4 + size]
        at += 4 + size
        if len(value) != size:
            raise ValueError(f"{path} ends inside a record")
        records.append((key, value))
    return records


async def replay(database_url: str, records: Sequence[tuple[bytes, bytes]], batch: int) -> None:
    """The records through the segmenter's batch handler, `batch` at a time, in order."""
    settings = SegmenterSettings(database_url=database_url, stores_file=STORES_FILE)
    engine = build_engine(settings, custom_plans=True)
    stores = StoreRegistry.load(STORES_FILE, allow_placeholder_secrets=True)
    handle = FunnelProcessor(engine, stores)
    try:
        for start in range(0, len(records), batch):
            await handle([decode_storefront_event(value) for _, value in records[start : start + batch]])
    finally:
        await engine.dispose()


async def _dump_queries(conn: asyncpg.Connection) -> dict[str, str]:
    """table -> the SELECT that dumps it: every column but the volatile ones, in a fixed order."""
    queries: dict[str, str] = {}
    tables = await conn.fetch(
        "SELECT c.oid, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') ORDER BY c.relname",
        SCHEMA,
    )
    for table in tables:
        name = table["relname"]
        if name == "alembic_version":
            continue
        columns = await conn.fetch(
            "SELECT attname, attidentity <> '' AS identity FROM pg_attribute "
            "WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            table["oid"],
        )
        kept = [c["attname"] for c in columns if c["attname"] not in VOLATILE_COLUMNS and not c["identity"]]
        if name in IDENTITY_ORDER:
            order = list(IDENTITY_ORDER[name])
        else:
            key = await conn.fetch(
                "SELECT a.attname FROM pg_index i "
                "JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) ON true "
                "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
                "WHERE i.indrelid = $1 AND i.indisprimary ORDER BY k.n",
                table["oid"],
            )
            order = [r["attname"] for r in key] or kept
        if not kept:
            raise RuntimeError(f"no columns to dump in {SCHEMA}.{name}")
        selected = ", ".join(f'"{c}"' for c in kept)
        ordered = ", ".join(f'"{c}"' for c in order)
        queries[name] = f'SELECT {selected} FROM {SCHEMA}."{name}" ORDER BY {ordered}'  # noqa: S608
    return queries


async def digest_tables(database_url: str, dumps: dict[str, bytes] | None = None) -> dict[str, Any]:
    """sha256 and row count of each table's dump, and one digest over all of them (by table name); the
    dumps themselves into `dumps` when given."""
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        # The text of a timestamp or a float depends on these: fixed, so the dump does not.
        await conn.execute("SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET extra_float_digits = 1")
        tables: dict[str, dict[str, Any]] = {}
        overall = hashlib.sha256()
        for name, query in (await _dump_queries(conn)).items():
            chunks: list[bytes] = []

            async def collect(data: bytes, into: list[bytes] = chunks) -> None:
                into.append(bytes(data))

            await conn.copy_from_query(query, output=collect, format="text")
            dumped = b"".join(chunks)
            if dumps is not None:
                dumps[name] = dumped
            sha = hashlib.sha256(dumped).hexdigest()
            tables[name] = {"rows": dumped.count(b"\n"), "sha256": sha}
            overall.update(f"{name}\t{sha}\n".encode())
    finally:
        await conn.close()
    return {"digest": overall.hexdigest(), "tables": tables}


def _commit() -> str:
    git = shutil.which("git")
    if git is None:
        return "unknown"
    try:
        head = subprocess.run(  # noqa: S603 - fixed arguments
            [git, "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(  # noqa: S603 - fixed arguments
            [git, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, cwd=REPO_ROOT, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+changes" if dirty else "")


def migrate(database_url: str) -> None:
    run_checked(
        [sys.executable, "-m", "services.segmenter", "migrate"],
        what="segmenter migrate",
        env={**os.environ, "DATABASE_URL": database_url, "STORES_FILE": str(STORES_FILE)},
        cwd=REPO_ROOT,
        timeout=300,
    )


def replay_check(
    events: int,
    batch: int,
    root: Path,
    dump_dir: Path | None,
    input_file: Path | None = None,
    save_input_file: Path | None = None,
) -> dict[str, Any]:
    """Start a PostgreSQL of its own under `root`, replay, digest, stop it. `input_file`: replay the
    records saved there (`save_input_file`) instead of making the mix."""
    began = time.monotonic()
    commit = _commit()  # now: the code that runs is the code checked out when it started
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("w") as lock:
        # Two checks at once would share (and wipe) one server's directory.
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StackError(f"another replay-check is running (it holds {root / '.lock'})") from None
        return _replay_check(events, batch, root, dump_dir, input_file, save_input_file, commit, began)


def _replay_check(
    events: int,
    batch: int,
    root: Path,
    dump_dir: Path | None,
    input_file: Path | None,
    save_input_file: Path | None,
    commit: str,
    began: float,
) -> dict[str, Any]:
    records = load_input(input_file) if input_file else replay_input(events)
    if save_input_file is not None:
        save_input(records, save_input_file)
    shutil.rmtree(root / "postgres", ignore_errors=True)
    server = start_postgres(root / "postgres", free_ports(1)[0], die_with_parent=True)
    try:
        url = server.create_database("replay_check")
        migrate(url)
        replayed = time.monotonic()
        asyncio.run(replay(url, records, batch))
        replay_seconds = time.monotonic() - replayed
        dumps: dict[str, bytes] = {}
        found = asyncio.run(digest_tables(url, dumps))
    finally:
        server.stop()
    if dump_dir is not None:
        dump_dir.mkdir(parents=True, exist_ok=True)
        for name, dumped in dumps.items():
            (dump_dir / f"{name}.tsv").write_bytes(dumped)
    return {
        **found,
        "input": {"events": len(records), "sha256": input_digest(records), "batch": batch},
        "commit": commit,
        # The replay runs the segmenter's rules in this process, as they were imported: compiled (an
        # extension module, shared/compiled.py) or not, which its time depends on and its digest must not.
        "rules_compiled": not str(funnel.__file__).endswith(".py"),
        "replay_seconds": round(replay_seconds, 1),
        "wall_seconds": round(time.monotonic() - began, 1),
    }


def differences(one: dict[str, Any], other: dict[str, Any]) -> list[str]:
    """What differs between two replay-check results, in words; empty when they are the same."""
    found: list[str] = []
    if one["input"] != other["input"]:
        found.append(f"the input differs: {one['input']} vs {other['input']}")
    for name in sorted(set(one["tables"]) | set(other["tables"])):
        a, b = one["tables"].get(name), other["tables"].get(name)
        # A table one side's schema has and the other's lacks (a migration between them) holds the same
        # state when it is empty: no rows there and no table here.
        if a != b and not ((a is None and b["rows"] == 0) or (b is None and a["rows"] == 0)):
            found.append(f"{name}: {a} vs {b}")
    return found


def load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded
