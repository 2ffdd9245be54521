"""The results: a table on stdout, bench/results/latest.json and a PNG chart of each figure against its
target. Every figure is the median of the runs, with min..max as its spread."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.stats import Figure

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Spec:
    key: str
    label: str
    unit: str
    target: float | None = None
    higher_is_better: bool = True


SPECS = (
    Spec("ingest_webhook_req_per_s", "ingest: Shopify webhooks", "req/s", 2000),
    Spec("ingest_webhook_p50_ms", "  response p50", "ms", None, False),
    Spec("ingest_webhook_p99_ms", "  response p99", "ms", None, False),
    Spec("ingest_batch_events_per_s", "ingest: Segment batch events", "events/s", 30000),
    Spec("ingest_batch_p50_ms", "  response p50", "ms", None, False),
    Spec("ingest_batch_p99_ms", "  response p99", "ms", None, False),
    Spec("limit_kafka_produce_per_s", "limit: raw Kafka produce", "events/s"),
    Spec("ingest_webhook_req_per_s_2_workers", "ingest, 2 processes: webhooks", "req/s"),
    Spec("ingest_batch_events_per_s_2_workers", "ingest, 2 processes: batch events", "events/s"),
    Spec("segmenter_events_per_s", "segmenter: processed + committed", "events/s", 20000),
    Spec("segmenter_events_per_s_2_instances", "segmenter, 2 processes", "events/s"),
    Spec("limit_postgres_upsert_rows_per_s", "limit: raw Postgres upserts", "rows/s"),
    Spec("limit_postgres_upsert_events_per_s", "  same rows, per event", "events/s"),
    Spec("segmenter_limit_ratio", "  limit / segmenter", "×", 4, False),
    Spec("e2e_stage_p50_ms", "e2e: 2xx → stage committed p50", "ms", None, False),
    Spec("e2e_stage_p95_ms", "  p95", "ms", None, False),
    Spec("e2e_stage_p99_ms", "  p99", "ms", 250, False),
    Spec("e2e_email_p50_ms", "e2e: 2xx → email accepted p50", "ms", None, False),
    Spec("e2e_email_p95_ms", "  p95", "ms", None, False),
    Spec("e2e_email_p99_ms", "  p99", "ms", 2000, False),
    Spec("e2e_email_delivered_share", "  welcome emails in by the end", "share"),
    Spec("peak_rss_mb_ingest", "peak memory: ingest", "MiB", None, False),
    Spec("peak_rss_mb_segmenter", "peak memory: segmenter", "MiB", None, False),
    Spec("peak_rss_mb_notifier", "peak memory: notifier", "MiB", None, False),
)


def figures(raw: dict[str, Any]) -> dict[str, Figure]:
    """The published figures out of the phases' raw results."""
    found: dict[str, Figure] = {}

    def put(key: str, runs: list[Any], pick: Callable[[Any], float]) -> None:
        if runs:
            found[key] = Figure.of([pick(r) for r in runs])

    ingest = raw.get("ingest", {})
    put("ingest_webhook_req_per_s", ingest.get("webhooks", []), lambda r: r["per_s"])
    put("ingest_webhook_p50_ms", ingest.get("webhooks", []), lambda r: r["p50_ms"])
    put("ingest_webhook_p99_ms", ingest.get("webhooks", []), lambda r: r["p99_ms"])
    put("ingest_batch_events_per_s", ingest.get("batch", []), lambda r: r["events_per_s"])
    put("ingest_batch_p50_ms", ingest.get("batch", []), lambda r: r["p50_ms"])
    put("ingest_batch_p99_ms", ingest.get("batch", []), lambda r: r["p99_ms"])
    put("limit_kafka_produce_per_s", ingest.get("limit", []), lambda r: r["events_per_s"])
    put("ingest_webhook_req_per_s_2_workers", ingest.get("webhooks_2_workers", []), lambda r: r["per_s"])
    put("ingest_batch_events_per_s_2_workers", ingest.get("batch_2_workers", []), lambda r: r["events_per_s"])
    put("peak_rss_mb_ingest", ingest.get("peak_rss_mb", []), float)
    seg = raw.get("segmenter", {})
    put("segmenter_events_per_s", seg.get("segmenter", []), lambda r: r["events_per_s"])
    put(
        "segmenter_events_per_s_2_instances",
        seg.get("segmenter_2_instances", []),
        lambda r: r["events_per_s"],
    )
    put("limit_postgres_upsert_rows_per_s", seg.get("limit", []), lambda r: r["rows_per_s"])
    put("limit_postgres_upsert_events_per_s", seg.get("limit", []), lambda r: r["events_per_s"])
    pairs = list(zip(seg.get("segmenter", []), seg.get("limit", []), strict=False))
    put("segmenter_limit_ratio", pairs, lambda p: p[1]["events_per_s"] / (p[0]["events_per_s"] or math.nan))
    put("peak_rss_mb_segmenter", seg.get("peak_rss_mb", []), float)
    e2e = raw.get("e2e", {})
    for name in (
        "stage_p50_ms",
        "stage_p95_ms",
        "stage_p99_ms",
        "email_p50_ms",
        "email_p95_ms",
        "email_p99_ms",
        "email_delivered_share",
    ):
        put(f"e2e_{name}", e2e.get("runs", []), lambda r, n=name: r.get(n, math.nan))  # type: ignore[misc]
    put("peak_rss_mb_notifier", e2e.get("peak_rss_mb", []), lambda r: r["notifier"])
    if "peak_rss_mb_ingest" not in found:
        put("peak_rss_mb_ingest", e2e.get("peak_rss_mb", []), lambda r: r["ingest"])
    return found


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "–"
    if abs(value) < 1:
        return f"{value:.2f}"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.1f}"


def _verdict(spec: Spec, value: float) -> str:
    if spec.target is None or math.isnan(value):
        return ""
    met = value >= spec.target if spec.higher_is_better else value <= spec.target
    return "[green]met[/]" if met else "[red]short[/]"


def print_table(found: dict[str, Figure], before: dict[str, Any] | None, console: Console) -> None:
    table = Table(title="Loyalty Funnel benchmark (median of runs, min–max)")
    for column in ("figure", "median", "spread", "unit", "target", "", "before"):
        table.add_column(column, justify="left" if column in ("figure", "unit", "") else "right")
    for spec in SPECS:
        fig = found.get(spec.key)
        if fig is None:
            continue
        was = before.get(spec.key) if before else None
        table.add_row(
            spec.label,
            _fmt(fig.median),
            f"{_fmt(fig.low)}–{_fmt(fig.high)}",
            spec.unit,
            ("≥ " if spec.higher_is_better else "≤ ") + _fmt(spec.target) if spec.target is not None else "",
            _verdict(spec, fig.median),
            _fmt(float(was)) if isinstance(was, (int, float)) else "",
        )
    console.print(table)


def write_json(found: dict[str, Figure], raw: dict[str, Any], meta: dict[str, Any], path: Path) -> None:
    document: dict[str, Any] = {key: fig.median for key, fig in found.items()}
    document["spread"] = {key: fig.as_dict() for key, fig in found.items()}
    document["targets"] = {s.key: s.target for s in SPECS if s.target is not None}
    document["meta"] = meta
    document["raw"] = raw
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=str, allow_nan=True) + "\n")


def write_chart(found: dict[str, Figure], path: Path, before: dict[str, Any] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [s for s in SPECS if s.target is not None and s.key in found]
    if not shown:
        return
    fig, axes = plt.subplots(1, len(shown), figsize=(3.2 * len(shown), 4), squeeze=False)
    titles = {s.key: s.label.strip() for s in SPECS}
    titles |= {
        "e2e_stage_p99_ms": "e2e: 2xx → stage committed p99",
        "e2e_email_p99_ms": "e2e: 2xx → email, p99",
    }
    for ax, spec in zip(axes[0], shown, strict=True):
        f = found[spec.key]
        labels, values, errors = ["now"], [f.median], [[f.median - f.low], [f.high - f.median]]
        if before and isinstance(before.get(spec.key), (int, float)):
            was = float(before[spec.key])
            spread = before.get("spread", {}).get(spec.key, {})
            labels.insert(0, "before")
            values.insert(0, was)
            errors = [
                [was - spread.get("min", was), *errors[0]],
                [spread.get("max", was) - was, *errors[1]],
            ]
        if spec.unit == "ms" and max(values) > 20 * min(values):
            ax.set_yscale("log")  # before and after latencies differ by orders of magnitude
        met = (f.median >= spec.target) if spec.higher_is_better else (f.median <= spec.target)  # type: ignore[operator]
        colours = ["#bbbbbb"] * (len(values) - 1) + ["#2e8b57" if met else "#c0392b"]
        ax.bar(labels, values, yerr=errors, capsize=6, color=colours)
        ax.axhline(spec.target, color="black", linestyle="--", linewidth=1, label="target")
        ax.set_title(titles[spec.key], fontsize=9)
        ax.set_ylabel(spec.unit)
        ax.legend(fontsize=7)
    fig.suptitle("Loyalty Funnel: figures against targets (median, min–max over runs)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown_table(latest: dict[str, Any], before: dict[str, Any] | None) -> str:
    """The figures of two results files side by side, for bench/README.md."""
    lines = [
        "| figure | before | now (median) | now (min–max) | unit | target |",
        "| --- | ---: | ---: | ---: | --- | --- |",
    ]
    spread = latest.get("spread", {})
    for spec in SPECS:
        if spec.key not in spread:
            continue
        fig = spread[spec.key]
        was = before.get(spec.key) if before else None
        target = ""
        if spec.target is not None:
            target = ("≥ " if spec.higher_is_better else "≤ ") + _fmt(spec.target)
            met = fig["median"] >= spec.target if spec.higher_is_better else fig["median"] <= spec.target
            target += " ✓" if met else " ✗"
        lines.append(
            f"| {spec.label.strip()} | {_fmt(float(was)) if isinstance(was, (int, float)) else '–'} "
            f"| {_fmt(fig['median'])} | {_fmt(fig['min'])}–{_fmt(fig['max'])} | {spec.unit} | {target} |"
        )
    return "\n".join(lines)
