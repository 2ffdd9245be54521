"""A chaos run: its own stack, a steady load, one SIGKILL per component in turn, then the verdict.

The stack is deploy/devstack's, laid out under .run/chaos/ on free loopback ports (so `make up` and a
test session are untouched), with the same supervisor `make up` runs: after each SIGKILL it is the
supervisor that brings the component back, as compose's restart policy would in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import signal
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import yaml
from rich.console import Console

from deploy.chaos import gather
from deploy.chaos.load import SteadyLoad, acknowledged_event_ids
from deploy.chaos.verdict import Fault, Findings, duplicate_messages, fault_times, lost_events
from deploy.devstack.ports import free_ports
from deploy.devstack.postgres import remove_server_data
from deploy.devstack.process import ManagedProcess, StackError
from deploy.devstack.stack import REPO_ROOT, SERVICE_NAMES, Stack, StackLayout
from deploy.simulator.generator import SimulationConfig, generate
from deploy.simulator.http_plan import RequestPlan, plan_requests
from deploy.simulator.run import load_target

CHAOS_DIR = REPO_ROOT / ".run" / "chaos"
DEV_REGISTRY = REPO_ROOT / "deploy" / "stores.dev.yaml"
STORE = "demo"
LANES = 16
# Segment calls per batch: small, so the load is many requests rather than a few big ones.
BATCH_SIZE = 10
# A day and a half of history: every trigger is younger than the flows' max age (2 days), so the
# notifier sends, and duplicate messages could show.
HISTORY_DAYS = 1.5
REQUESTS_PER_CUSTOMER = 4.5
SEND_LEASE_SECONDS = 20


@dataclass(frozen=True)
class ChaosOptions:
    duration: float = 180.0
    rate: float = 40.0
    brokers: int = 1
    seed: int = 1
    ready_limit: float = 120.0
    settle_timeout: float = 240.0
    keep: bool = False


def chaos_registry(target: Path, shopify_port: int, woocommerce_port: int) -> Path:
    """The development registry, written to target, with the demo store's test shop and site moved to this
    stack's ports (the registry names make up's, 8010 and 8011, which this run must not touch), and its
    relative paths (templates_dir...) made absolute, since they are read relative to the registry file."""
    document = yaml.safe_load(DEV_REGISTRY.read_text())
    demo = document["stores"][STORE]
    demo["shopify"]["admin_api_url"] = f"http://127.0.0.1:{shopify_port}/admin/api/2025-10/graphql.json"
    demo["woocommerce"]["api_url"] = f"http://127.0.0.1:{woocommerce_port}/wp-json/wc/v3/"
    _absolute_paths(document, DEV_REGISTRY.parent)
    target.write_text(yaml.safe_dump(document, sort_keys=False))
    return target


def _absolute_paths(node: object, base: Path) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if (
                isinstance(value, str)
                and str(key).endswith(("_dir", "_file"))
                and not Path(value).is_absolute()
            ):
                node[key] = str(base / value)
            else:
                _absolute_paths(value, base)
    elif isinstance(node, list):
        for item in node:
            _absolute_paths(item, base)


def chaos_layout(root: Path, brokers: int) -> StackLayout:
    ports = free_ports(2 * brokers + 8)
    kafka = tuple((ports[2 * i], ports[2 * i + 1]) for i in range(brokers))
    rest = ports[2 * brokers :]
    registry = chaos_registry(root / "stores.yaml", rest[6], rest[7])
    return StackLayout(
        root=root,
        kafka=kafka,
        postgres_port=rest[0],
        smtp_port=rest[1],
        smtp_ui_port=rest[2],
        service_ports=(rest[3], rest[4], rest[5]),
        shopify_port=rest[6],
        woocommerce_port=rest[7],
        stores_file=str(registry),
        honour_env=False,
        # The per-store rate limit guards against a runaway store; here that store is the load generator.
        service_env={
            "INGEST_RATE_LIMIT_PER_SECOND": "100000",
            "INGEST_RATE_LIMIT_BURST": "100000",
            # A claim a killed notifier left is settled (resent once, or skipped) when its lease runs out:
            # short here, so the run sees those resends before it counts duplicates.
            "NOTIFIER_SEND_LEASE_SECONDS": str(SEND_LEASE_SECONDS),
        },
    )


def _clean(root: Path) -> None:
    """Stop what a previous run left (its own pidfiles) and start from empty directories."""
    if (root / "layout.json").is_file():
        Stack(StackLayout.load(root), Console(quiet=True)).down()
    remove_server_data(root / "postgres")
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    root.chmod(0o755)


def build_plan(options: ChaosOptions, registry: Path) -> RequestPlan:
    customers = max(200, int(options.rate * options.duration / REQUESTS_PER_CUSTOMER))
    end = datetime.now(UTC).replace(microsecond=0)
    config = SimulationConfig(seed=options.seed, customers=customers, days=HISTORY_DAYS, end=end)
    target = load_target(registry, STORE)
    history = generate(config)
    return plan_requests(
        history, target, lanes=LANES, batch_size=BATCH_SIZE, shopify_since=end - timedelta(days=HISTORY_DAYS)
    )


def fault_order(stack: Stack) -> list[str]:
    """Each service, one broker (the first: every client's first bootstrap address), then Postgres."""
    return [*SERVICE_NAMES, stack.kafka_processes()[0].name, "postgres"]


class ChaosRun:
    def __init__(self, options: ChaosOptions, console: Console, root: Path = CHAOS_DIR) -> None:
        self.options = options
        self.console = console
        self.root = root
        self.unknown_fate = 0

    def run(self) -> Findings:
        self.root.parent.mkdir(parents=True, exist_ok=True)
        with (self.root.parent / ".chaos.lock").open("w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StackError("another chaos run is under way in this checkout") from None
            _clean(self.root)
            stack = Stack(chaos_layout(self.root, self.options.brokers), self.console)
            try:
                self.console.rule(f"Chaos stack in {self.root} ({self.options.brokers} broker(s))")
                stack.up(timeout=180)
                return asyncio.run(self._run(stack))
            finally:
                if self.options.keep:
                    self.console.print(f"The stack keeps running: python -m deploy.chaos down ({self.root})")
                else:
                    self.console.rule("Stopping the chaos stack")
                    stack.down()
                    # Its database is of no further use (the logs stay); outside the checkout it would linger.
                    remove_server_data(self.root / "postgres")

    async def _run(self, stack: Stack) -> Findings:
        options, console = self.options, self.console
        plan = await asyncio.to_thread(build_plan, options, Path(stack.stack_env()["STORES_FILE"]))
        console.print(
            f"Load: {options.rate:.0f} requests/s for {options.duration:.0f} s from a simulated store "
            f"(seed {options.seed}; {sum(len(lane) for lane in plan.lanes):,} requests planned)"
        )
        layout = stack.layout
        limits = httpx.Limits(max_connections=LANES, max_keepalive_connections=LANES)
        async with httpx.AsyncClient(
            base_url=layout.service_url("ingest"), timeout=10.0, limits=limits
        ) as client:
            load = SteadyLoad(client, plan, options.rate)
            began = time.monotonic()
            sending = asyncio.create_task(load.run(give_up_after=60.0))
            progress = asyncio.create_task(self._progress(load, began))
            faults = await self._inject(stack, began)
            remaining = began + options.duration - time.monotonic()
            if remaining > 0:
                await asyncio.sleep(remaining)
            load.stop.set()
            stats = await sending
            progress.cancel()
        sent_for = time.monotonic() - began
        acknowledged = acknowledged_event_ids(stats, STORE)
        console.print(
            f"Sent for {sent_for:.0f} s: {len(stats.acknowledged):,} requests acknowledged "
            f"({len(acknowledged):,} events), statuses {dict(sorted(stats.by_status.items()))}, "
            f"{stats.transport_errors} connection errors, {stats.abandoned} abandoned"
        )
        dsn = gather.plain_dsn(stack.stack_env()["DATABASE_URL"])
        settled, lost = await self._settle(stack, dsn, acknowledged)
        # Counted at the end: the supervisor writes its counts a moment after each restart.
        restarts = stack.restarts()
        faults = [replace(f, restarts=restarts.get(f.component, 0)) for f in faults]
        handed = await gather.handed_over(dsn)
        emails = gather.sink_emails(stack.sink_messages)
        return Findings(
            acknowledged_requests=len(stats.acknowledged),
            acknowledged_events=len(set(acknowledged)),
            lost=lost,
            duplicate_transitions=await gather.duplicate_transitions(dsn),
            duplicate_messages=duplicate_messages(emails, handed),
            dead_letters=await gather.dead_letters(layout.bootstrap_servers),
            faults=faults,
            refused=len(stats.refused),
            emails=len({e.message_id for e in emails}),
            settled=settled,
            unknown_fate=self.unknown_fate,
            ready_limit=options.ready_limit,
            notes=stats.refused[:5],
        )

    async def _progress(self, load: SteadyLoad, began: float) -> None:
        while True:
            await asyncio.sleep(20)
            elapsed = time.monotonic() - began
            self.console.print(
                f"[dim]{elapsed:5.0f} s: {load.sent:,} requests acknowledged "
                f"({load.sent / elapsed:.0f}/s), {load.stats.transport_errors} connection errors, "
                f"{load.stats.by_status.get(503, 0)} × 503[/]"
            )

    async def _inject(self, stack: Stack, began: float) -> list[Fault]:
        names = fault_order(stack)
        handles = {p.name: p for p in stack.components()}
        faults = []
        for name, at in zip(names, fault_times(self.options.duration, len(names)), strict=True):
            delay = began + at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            faults.append(await self._kill_and_wait(stack, handles[name], time.monotonic() - began))
        return faults

    async def _kill_and_wait(self, stack: Stack, process: ManagedProcess, at: float) -> Fault:
        pid = process.pid()
        restarts_before = stack.restarts().get(process.name, 0)
        if pid is None:
            self.console.print(f"[red]✗ {process.name} was not running at {at:.0f} s[/]")
            return Fault(process.name, at, None)
        killed = time.monotonic()
        # The whole process group, as a container's kill takes everything in it (Postgres's backends too).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        # The stack was started from this process, so the dead is our child: reap it, or its zombie would
        # still own its PID, and PostgreSQL refuses to start while the PID in postmaster.pid exists.
        await asyncio.to_thread(_reap, pid)
        self.console.print(f"[yellow]⚡[/] {at:5.0f} s: SIGKILL {process.name} (pid {pid})")
        deadline = killed + self.options.ready_limit * 1.5
        while time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            now_pid = process.pid()
            if now_pid is None or now_pid == pid:
                continue
            ready, _ = await asyncio.to_thread(stack.readiness, process)
            if ready and await asyncio.to_thread(stack.all_ready):
                took = time.monotonic() - killed
                restarts = stack.restarts().get(process.name, 0) - restarts_before
                self.console.print(
                    f"[green]✓[/] {process.name} restarted by the supervisor (pid {now_pid}); "
                    f"everything ready {took:.1f} s after the kill"
                )
                return Fault(process.name, at, took, restarts)
        self.console.print(f"[red]✗ not ready again after killing {process.name}[/]")
        return Fault(process.name, at, None, stack.restarts().get(process.name, 0) - restarts_before)

    async def _settle(self, stack: Stack, dsn: str, acknowledged: list[str]) -> tuple[bool, list[str]]:
        """Until every acknowledged event is processed and the notifier and the sink are quiet."""
        deadline = time.monotonic() + self.options.settle_timeout
        lost = acknowledged
        with self.console.status("Waiting for the pipeline to catch up") as status:
            while time.monotonic() < deadline:
                try:
                    lost = lost_events(acknowledged, await gather.processed_event_ids(dsn, STORE))
                except (OSError, asyncpg.PostgresError) as exc:
                    status.update(f"Postgres does not answer yet ({type(exc).__name__})")
                    await asyncio.sleep(3)
                    continue
                if not lost:
                    break
                status.update(f"The segmenter has {len(lost):,} acknowledged events to go")
                await asyncio.sleep(3)
            if lost:
                return False, lost
            last, since = -1, time.monotonic()
            while time.monotonic() < deadline:
                count = gather.sink_count(stack.sink_messages)
                try:
                    busy, self.unknown_fate = await gather.notifier_backlog(dsn)
                except (OSError, asyncpg.PostgresError):
                    busy = -1
                if count != last or busy:
                    last, since = count, time.monotonic()
                elif time.monotonic() - since >= (15 if not self.unknown_fate else SEND_LEASE_SECONDS + 25):
                    return True, []
                status.update(f"The notifier is still sending ({count:,} emails so far, {busy} due)")
                await asyncio.sleep(2)
        return False, lost


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
