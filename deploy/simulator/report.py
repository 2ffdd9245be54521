"""The funnel report `make demo` prints: rich tables from the services' JSON answers. Pure: no I/O.

Each renderer takes what an endpoint answered, or None when it answered 404 (not built yet) or could not be
reached, and then says "n/a" instead of inventing a number.
"""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

STAGES = ("prospect", "first_time", "repeat", "loyal", "advocate")
HEALTHS = ("active", "at_risk", "lapsed")
BAR_WIDTH = 30


def _na(title: str, why: str) -> Text:
    return Text.assemble((f"{title}: ", "bold"), (f"n/a ({why})", "dim"))


def _bar(n: int, largest: int) -> Text:
    width = round(BAR_WIDTH * n / largest) if largest else 0
    return Text("█" * width, style="cyan")


def funnel_table(funnel: dict[str, Any] | None, why: str = "not available") -> RenderableType:
    title = "Customers per stage and health (segmenter /funnel)"
    if funnel is None:
        return _na(title, why)
    cells = {(c["stage"], c["health"]): int(c["customers"]) for c in funnel.get("cells", [])}
    table = Table(title=f"{title}: {funnel.get('customers', 0):,} customers", title_justify="left")
    table.add_column("stage")
    for health in HEALTHS:
        table.add_column(health, justify="right")
    table.add_column("total", justify="right", style="bold")
    table.add_column("")
    totals = {s: sum(cells.get((s, h), 0) for h in HEALTHS) for s in STAGES}
    largest = max(totals.values(), default=0)
    for stage in STAGES:
        counts = [cells.get((stage, h), 0) for h in HEALTHS]
        table.add_row(stage, *(f"{n:,}" for n in counts), f"{totals[stage]:,}", _bar(totals[stage], largest))
    by_health = [sum(cells.get((s, h), 0) for s in STAGES) for h in HEALTHS]
    table.add_section()
    table.add_row("all", *(f"{n:,}" for n in by_health), f"{sum(by_health):,}", "")
    return table


def _percent(value: object) -> str:
    return f"{float(str(value)):.1f} %" if value is not None else "–"


def retention_table(retention: dict[str, Any] | None, why: str = "not available") -> RenderableType:
    title = "Retention (segmenter /metrics/retention)"
    if retention is None:
        return _na(title, why)
    start, end = str(retention.get("start", ""))[:10], str(retention.get("end", ""))[:10]
    table = Table(title=f"{title}: {start} → {end}", title_justify="left", show_header=False)
    table.add_column("figure")
    table.add_column("value", justify="right", style="bold")
    table.add_column("meaning", style="dim")
    b, e, n = retention.get("B"), retention.get("E"), retention.get("N")
    rows = [
        ("CRR", _percent(retention.get("crr")), f"(E − N) / B = ({e} − {n}) / {b}"),
        (
            "repeat purchase rate",
            _percent(retention.get("repeat_purchase_rate")),
            "buyers of the period ordering 2+",
        ),
        (
            "purchase frequency",
            str(retention.get("purchase_frequency") or "–"),
            "orders per buyer in the period",
        ),
        (
            "average order value",
            str(retention.get("average_order_value") or "–"),
            "revenue less refunds per order",
        ),
        ("orders", f"{retention.get('orders', 0):,}", "in the period"),
        ("customers at start (B)", f"{b:,}" if b is not None else "–", "last order within the active window"),
        ("customers at end (E)", f"{e:,}" if e is not None else "–", ""),
        ("new customers (N)", f"{n:,}" if n is not None else "–", "first order in the period"),
        ("at risk now", f"{retention.get('at_risk', 0):,}", ""),
        ("lapsed now", f"{retention.get('lapsed', 0):,}", ""),
    ]
    for row in rows:
        table.add_row(*row)
    return table


# Why a message was not sent, in words, for the footnote under the flows.
SKIP_REASONS = {
    "trigger_too_old": "history older than the flow's max age: a backfill never emails",
    "no_marketing_consent": "no marketing consent",
}


def flows_table(flows: list[dict[str, Any]] | None, why: str = "not available") -> RenderableType:
    title = "Messages per flow (notifier /flows)"
    if flows is None:
        return _na(title, why)
    table = Table(title=title, title_justify="left")
    table.add_column("flow", no_wrap=True)
    for column in ("sent", "pending", "failed", "skipped", "converted", "revenue", "coupons", "redeemed"):
        table.add_column(column, justify="right", no_wrap=True)
    counted = ("sent", "pending", "failed", "skipped", "converted", "coupons_issued", "coupons_redeemed")
    totals: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    revenue = Decimal("0")
    for flow in flows:
        skipped: dict[str, int] = flow.get("skipped") or {}
        counts = {k: int(flow.get(k) or 0) for k in counted if k != "skipped"}
        counts["skipped"] = sum(skipped.values())
        money = Decimal(str(flow.get("revenue") or "0"))
        name = flow["flow"] if flow.get("enabled", True) else f"{flow['flow']} (off)"
        table.add_row(
            name,
            *(f"{counts[k]:,}" for k in counted[:5]),
            f"{money:,.2f}",
            *(f"{counts[k]:,}" for k in counted[5:]),
        )
        totals.update(counts)
        reasons.update(skipped)
        revenue += money
    table.add_section()
    table.add_row(
        "all",
        *(f"{totals[k]:,}" for k in counted[:5]),
        f"{revenue:,.2f}",
        *(f"{totals[k]:,}" for k in counted[5:]),
        style="bold",
    )
    if reasons:
        table.caption = "skipped: " + "; ".join(
            f"{reason} {n:,}" + (f" ({SKIP_REASONS[reason]})" if reason in SKIP_REASONS else "")
            for reason, n in reasons.most_common()
        )
        table.caption_justify = "left"
    return table


def audiences_table(audiences: list[dict[str, Any]] | None, why: str = "not available") -> RenderableType:
    title = "Audiences (notifier /audiences)"
    if audiences is None:
        return _na(title, why)
    table = Table(title=title, title_justify="left")
    table.add_column("audience")
    table.add_column("size", justify="right")
    table.add_column("exportable", justify="right")
    table.add_column("who", style="dim")
    for audience in audiences:
        table.add_row(
            str(audience.get("name")),
            f"{int(audience.get('size') or 0):,}",
            f"{int(audience.get('exportable') or 0):,}",
            str(audience.get("description") or ""),
        )
    return table


def subject_shape(subject: str, first_name: str | None, words: int = 5) -> str:
    """A subject without what personalises it, to count emails by kind: "Ana, how do you like your Mug?"
    -> "…, how do you like"."""
    if first_name:
        subject = subject.replace(first_name, "…")
    return " ".join(subject.split()[:words])


def emails_table(
    messages: list[dict[str, Any]] | None, ours: dict[str, str], why: str = "not available", kinds: int = 12
) -> RenderableType:
    """The sink's messages (newest first) to this run's customers (`ours`: email -> first name), counted by
    subject with the names taken out, each kind with its latest example."""
    title = "Emails in the SMTP sink"
    if messages is None:
        return _na(title, why)
    latest: dict[str, dict[str, Any]] = {}
    counts: Counter[str] = Counter()
    for message in messages:
        to = next((a.lower() for a in message.get("to", []) if a.lower() in ours), None)
        if to is None:
            continue
        shape = subject_shape(str(message.get("subject", "")), ours[to])
        counts[shape] += 1
        latest.setdefault(shape, message)
    heading = Text.assemble(
        (f"{title}: ", "bold"), f"{len(messages):,} in all, {counts.total():,} to this run's customers"
    )
    table = Table(title="by subject (names taken out), with the latest of each", title_justify="left")
    table.add_column("emails", justify="right")
    table.add_column("latest subject")
    table.add_column("to")
    for shape, n in counts.most_common(kinds):
        example = latest[shape]
        table.add_row(f"{n:,}", str(example.get("subject", "")), ", ".join(example.get("to", [])))
    return Group(heading, table)


def links(
    ingest: str, segmenter: str, notifier: str, sink: str, api_key: str, store_id: str
) -> RenderableType:
    table = Table(title="Look further", title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("where", style="cyan")
    rows = [
        ("ingest API docs", f"{ingest}/docs"),
        ("segmenter API docs", f"{segmenter}/docs"),
        ("notifier API docs", f"{notifier}/docs"),
        ("emails (SMTP sink UI)", f"{sink}/"),
        ("the funnel", f"curl -H 'Authorization: Bearer {api_key}' {segmenter}/v1/stores/{store_id}/funnel"),
        ("run it by hand", ".venv/bin/python -m deploy.simulator --help"),
        ("stop everything", "make down"),
    ]
    for row in rows:
        table.add_row(*row)
    return Group(table)
