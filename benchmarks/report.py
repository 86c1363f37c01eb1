"""The results as tables, the issue's target ratios, and a chart."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

Result = dict[str, Any]


def brief(result: Result, key: str = "per_s") -> str:
    """One measure in a few words, for progress lines."""
    if "error" in result:
        return f"error: {result['error'].splitlines()[0][:200]}"
    if "na" in result:
        return f"n/a ({result['na']})"
    return f"{result[key]:,.0f}/s"


@dataclass(frozen=True)
class Row:
    """One line of the tables: a system, or a system's worker variant."""

    system: str
    variant: str
    measures: Result  # the system's own (enqueue, bulk)
    runs: Result  # the variant's (processing_1, processing_2)

    @property
    def label(self) -> str:
        """``dtq/thread``, or the system's name when it has one variant."""
        return f"{self.system}/{self.variant}" if self.variant else self.system

    @property
    def is_dtq(self) -> bool:
        """Whether this row is the system under test."""
        return self.system == "dtq"

    def cell(self, path: str) -> float | str | None:
        """A figure by path (``enqueue.per_s``, ``processing_1.latency.p50_ms``), or a verdict."""
        if "error" in self.measures:
            return "error"
        head, *rest = path.split(".")
        node: Any = self.measures.get(head) if head in ("enqueue", "bulk") else self.runs.get(head)
        for key in rest:
            if not isinstance(node, dict):
                return None
            if "error" in node:
                return "error"
            if "na" in node:
                return "n/a"
            node = node.get(key)
        return node if isinstance(node, int | float) else None

    def value(self, path: str) -> float | None:
        """The figure, or None when it is missing, failed or not available."""
        cell = self.cell(path)
        return float(cell) if isinstance(cell, int | float) else None


def rows(results: Result) -> list[Row]:
    """Every system's rows, in the order run."""
    out = []
    for name, system in results.get("systems", {}).items():
        variants = system.get("variants") or {"": {"processing_1": system, "processing_2": system}}
        for label, runs in variants.items():
            shown = label if len(variants) > 1 else ""
            out.append(Row(name, shown, system, runs))
    return out


#: (header, path, format) of the throughput and latency table.
SPEED = (
    ("enqueue/s", "enqueue.per_s", "{:,.0f}"),
    ("bulk/s", "bulk.per_s", "{:,.0f}"),
    ("1 proc jobs/s", "processing_1.per_s", "{:,.0f}"),
    ("2 procs jobs/s", "processing_2.per_s", "{:,.0f}"),
    ("p50 ms", "processing_1.latency.p50_ms", "{:.2f}"),
    ("p99 ms", "processing_1.latency.p99_ms", "{:.2f}"),
)
#: The cost per job table.
COST = (
    ("enq cmds", "enqueue.commands_per_job", "{:.1f}"),
    ("enq trips", "enqueue.round_trips_per_job", "{:.1f}"),
    ("enq redis µs", "enqueue.redis_cpu_us_per_job", "{:.0f}"),
    ("enq client µs", "enqueue.client_cpu_us_per_job", "{:.0f}"),
    ("proc cmds", "processing_1.commands_per_job", "{:.1f}"),
    ("proc trips", "processing_1.round_trips_per_job", "{:.1f}"),
    ("proc redis µs", "processing_1.redis_cpu_us_per_job", "{:.0f}"),
    ("worker CPU µs", "processing_1.worker_cpu_us_per_job", "{:.0f}"),
    ("MB/100k queued", "enqueue.memory_per_100k_queued_mb", "{:.1f}"),
    ("MB/100k results", "processing_1.memory_per_100k_results_mb", "{:.1f}"),
)


def _table(title: str, columns: tuple[tuple[str, str, str], ...], all_rows: list[Row]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("system")
    for header, _, _ in columns:
        table.add_column(header, justify="right")
    for row in all_rows:
        cells = []
        for _, path, fmt in columns:
            cell = row.cell(path)
            cells.append(fmt.format(cell) if isinstance(cell, int | float) else str(cell or "-"))
        table.add_row(row.label, *cells, style="bold" if row.is_dtq else None)
    return table


@dataclass(frozen=True)
class Target:
    """One of the issue's goals: a ratio of dtq's figure to a reference, and the bound it must meet."""

    name: str
    path: str
    reference: str  # "best" (highest of the peers), "least" (lowest), "rq", "limit" or "none"
    bound: float
    at_least: bool  # True: ratio >= bound; False: ratio <= bound
    per_variant: bool


TARGETS = (
    Target("processing, 1 process: dtq / best peer", "processing_1.per_s", "best", 3, True, True),
    Target("processing, 2 processes: dtq / best peer", "processing_2.per_s", "best", 2, True, True),
    Target("bulk enqueue: dtq / RQ enqueue_many", "bulk.per_s", "rq", 3, True, False),
    Target("bulk enqueue: dtq / server limit", "bulk.per_s", "limit", 0.5, True, False),
    Target("enqueue one by one: dtq / best peer", "enqueue.per_s", "best", 1.3, True, False),
    Target("Redis commands per processed job", "processing_1.commands_per_job", "none", 3, False, True),
    Target("(round trips per processed job)", "processing_1.round_trips_per_job", "none", 3, False, True),
    Target(
        "worker CPU per job: dtq / best peer", "processing_1.worker_cpu_us_per_job", "least", 0.5, False, True
    ),
    Target("latency p50: dtq / best peer", "processing_1.latency.p50_ms", "least", 1, False, True),
    Target("latency p99: dtq / best peer", "processing_1.latency.p99_ms", "least", 1, False, True),
)


def _reference(target: Target, all_rows: list[Row], results: Result) -> tuple[float | None, str]:
    """The figure dtq is compared with, and whose it is."""
    if target.reference == "none":
        return 1.0, ""
    if target.reference == "limit":
        return results.get("limit", {}).get("evalsha_per_s"), "redis-benchmark EVALSHA"
    peers = [
        (row.value(target.path), row.label if target.per_variant else row.system)
        for row in all_rows
        if not row.is_dtq
    ]
    if target.reference == "rq":
        peers = [peer for peer in peers if peer[1].startswith("rq")][:1]
    found = [(value, label) for value, label in peers if value is not None]
    if not found:
        return None, "no peer figure"
    pick: Callable[..., tuple[float, str]] = min if target.reference == "least" else max
    return pick(found)


def targets(results: Result) -> list[Result]:
    """Every target's ratio, for each dtq worker variant where it depends on the worker."""
    all_rows = rows(results)
    dtq_rows = [row for row in all_rows if row.is_dtq]
    out = []
    for target in TARGETS:
        reference, whose = _reference(target, all_rows, results)
        for row in dtq_rows if target.per_variant else dtq_rows[:1]:
            mine = row.value(target.path)
            ratio = mine / reference if mine is not None and reference else None
            met = (
                None
                if ratio is None
                else (ratio >= target.bound if target.at_least else ratio <= target.bound)
            )
            out.append(
                {
                    "target": target.name,
                    "dtq": row.label if target.per_variant else "dtq",
                    "dtq_value": mine,
                    "reference": whose,
                    "reference_value": reference if target.reference != "none" else None,
                    "ratio": ratio,
                    "goal": f"{'>=' if target.at_least else '<='} {target.bound:g}",
                    "met": met,
                }
            )
    return out


def _num(value: float | None, fmt: str = "{:,.1f}") -> str:
    return "-" if value is None else fmt.format(value)


def _targets_table(results: Result) -> Table:
    table = Table(title="Issue 8's targets", title_justify="left")
    for header in ("target", "dtq", "dtq figure", "compared with", "their figure", "ratio", "goal", "met"):
        table.add_column(header, justify="left" if header in ("target", "dtq", "compared with") else "right")
    for t in results.get("targets", []):
        met = {True: "yes", False: "NO", None: "?"}[t["met"]]
        table.add_row(
            t["target"], t["dtq"], _num(t["dtq_value"]), t["reference"] or "-", _num(t["reference_value"]),
            _num(t["ratio"], "{:.2f}"), t["goal"], met,
        )  # fmt: skip
    return table


def _notes(results: Result) -> list[str]:
    """Settings and context lines printed under the tables."""
    m = results.get("machine", {})
    lines = [
        f"{results.get('date')}  {m.get('cpu_model')} x{m.get('nproc')}  Python {m.get('python')}  "
        f"redis-server {m.get('redis_server')}  sizes {results.get('sizes')}  "
        f"{results.get('seconds', 0):.0f} s",
    ]
    limit = results.get("limit", {})
    if "evalsha_per_s" in limit:
        lines.append(f"server limit: {limit['evalsha_per_s']:,.0f} EVALSHA/s ({limit['command']})")
    for name, system in results.get("systems", {}).items():
        if "error" in system:
            lines.append(f"{name}: error: {system['error']}")
            continue
        settings = "; ".join(f"{k}: {v}" for k, v in system.get("settings", {}).items())
        lines.append(f"{name} {system.get('version')}: {settings}")
        for label, variant in system.get("variants", {}).items():
            shown = ", ".join(f"{k} {v}" for k, v in variant.get("settings", {}).items())
            lines.append(f"    {label}: {shown}")
    lines += [
        "Processing: jobs queued first, workers started after; timed from the first completion seen to the",
        "last (polled every 10 ms). cmds = INFO commandstats calls (commands run inside scripts included),",
        "trips = requests the server read (total_reads_processed), both less the harness's own; CPU per job",
        "over the same window; MB per 100k scaled from the measure's own size. Latency: one job at a time",
        "on an idle 1-process worker started for it, after 5 untimed warm-up jobs, in 3 rounds that take",
        "every system in turn; the medians of the rounds' p50 and p99 (each round's in latest.json,",
        "latency.rounds). Bulk: up to 5 calls (while they take under 3 s in all), each of the whole",
        "bulk size, on an emptied server, pooled: all their jobs over all their time (each call's rate",
        "and the median's in latest.json); the server limit: the median of 3 redis-benchmark runs. Enqueue",
        "one by one: 3 rounds, every system in turn in each, on an emptied server; the median round's",
        "figures (every round's rate is in latest.json, rounds_per_s).",
        "error / n/a: details in latest.json.",
    ]
    return lines


def print_tables(results: Result, console: Console | None = None) -> None:
    """Print the speed, cost and targets tables, then the settings."""
    console = console or Console(width=None if Console().is_terminal else 160)
    all_rows = rows(results)
    console.print(_table("Throughput and latency (concurrency 1 per worker process)", SPEED, all_rows))
    console.print(_table("Cost per job (processing: 1 worker process)", COST, all_rows))
    console.print(_targets_table(results))
    for line in _notes(results):
        console.print(line, highlight=False, markup=False, soft_wrap=True)


def chart(results: Result, path: Path) -> None:
    """Horizontal bars per measure (dtq highlighted) and a panel of the targets met or missed."""
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt

    all_rows = rows(results)
    fig = plt.figure(figsize=(14, 20))
    grid = fig.add_gridspec(5, 2, height_ratios=(1, 1, 1, 1, 1.4))
    for index, (title, key, unit) in enumerate(_CHART_PANELS):
        _bars(fig.add_subplot(grid[index // 2, index % 2]), all_rows, key, f"{title} ({unit})")
    _targets_panel(fig.add_subplot(grid[4, :]), results.get("targets", []))
    m = results.get("machine", {})
    fig.suptitle(
        f"dtq vs peers on one private redis-server {m.get('redis_server')}, no-op jobs - "
        f"{m.get('nproc')} x {m.get('cpu_model')}, {results.get('date')}",
        fontsize=12,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=90)
    plt.close(fig)


_CHART_PANELS = (
    ("enqueue, one per call", "enqueue.per_s", "jobs/s, higher is better"),
    ("bulk enqueue", "bulk.per_s", "jobs/s, higher is better"),
    ("processing, 1 worker process", "processing_1.per_s", "jobs/s, higher is better"),
    ("processing, 2 worker processes", "processing_2.per_s", "jobs/s, higher is better"),
    ("latency p50", "processing_1.latency.p50_ms", "ms, lower is better"),
    ("latency p99", "processing_1.latency.p99_ms", "ms, lower is better"),
    ("worker CPU per job, 1 worker process", "processing_1.worker_cpu_us_per_job", "µs, lower is better"),
    ("Redis commands per processed job", "processing_1.commands_per_job", "scripts' own included"),
)


def _bars(ax: Any, all_rows: list[Row], key: str, title: str) -> None:
    per_system = key.startswith(("enqueue.", "bulk."))  # the same for every worker variant
    if per_system:
        first: dict[str, Row] = {}
        for row in all_rows:
            first.setdefault(row.system, row)
        all_rows = list(first.values())
    labels = [row.system if per_system else row.label for row in all_rows]
    values = [row.value(key) or 0.0 for row in all_rows]
    colours = ["tab:red" if row.is_dtq else "tab:gray" for row in all_rows]
    ax.barh(labels, values, color=colours)
    ax.invert_yaxis()
    ax.set_title(title, fontsize=10)
    shown = sorted(v for v in values if v)
    # A slow outlier (over 5 times the median, where lower is better) would flatten every
    # other bar: cut the axis, say so. Where higher is better the leader's bar is the point.
    cut = "lower is better" in title
    top = (min(shown[-1], 5 * shown[len(shown) // 2]) if cut else shown[-1]) if shown else 1.0
    for y, (row, value) in enumerate(zip(all_rows, values, strict=True)):
        text = f"{value:,.0f}" if value >= 100 else f"{value:.3g}"
        text = text if value else str(row.cell(key) or "-")
        if value > top:
            ax.text(top * 0.99, y, f"{text} (axis cut) ", va="center", ha="right", fontsize=8, color="white")
        else:
            ax.text(value + top * 0.01, y, text, va="center", fontsize=8)
    ax.set_xlim(0, top * 1.25)


#: The longest bar of the targets panel: three times the goal.
_SCORE_CAP = 3.0


def _targets_panel(ax: Any, rows_: list[Result]) -> None:
    """Each target as its ratio over (or under) the goal: a bar past 1 means met."""
    labels, scores, colours = [], [], []
    for t in rows_:
        if t["ratio"] is None:
            continue
        bound = float(t["goal"].split()[1])
        at_least = t["goal"].startswith(">=")
        score = t["ratio"] / bound if at_least else bound / t["ratio"] if t["ratio"] else _SCORE_CAP
        # Capped, so one target far past its goal does not squash the others' bars.
        score = min(score, _SCORE_CAP)
        labels.append(f"{t['target']} [{t['dtq']}] {t['ratio']:.2f} ({t['goal']})")
        scores.append(score)
        colours.append("tab:green" if t["met"] else "tab:red")
    ax.barh(labels, scores, color=colours)
    ax.axvline(1.0, color="black", linewidth=1)
    ax.invert_yaxis()
    ax.tick_params(axis="y", labelsize=8)
    ax.set_title(
        "issue 8's targets: how far past the goal (1 = reached, capped at 3; green = met)", fontsize=10
    )
