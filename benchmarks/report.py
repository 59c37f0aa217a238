"""The comparison's results: a Markdown table, the same as JSON, and a chart of ratios.

Every ratio is LeadTrail's median over the peer's median from the same
invocation (the systems take turns within each run). For rates a ratio above 1
means LeadTrail is faster; for latencies and bytes, a ratio below 1 means
LeadTrail is better. The chart shows LeadTrail's advantage the same way round
for every figure (above 1: LeadTrail better).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from benchmarks.storage_bench import Figure, fmt
from benchmarks.systems import (
    DISK,
    INGEST_BATCH,
    INGEST_SINGLE_1,
    INGEST_SINGLE_16,
    LIVE,
    REPLAY,
    ROOT,
    SCAN,
    TIMELINE_1,
    TIMELINE_4,
    TIMELINE_16,
    System,
    command_output,
)
from benchmarks.workload import Workload

if TYPE_CHECKING:
    from benchmarks.compare import Measurements, Outcome


@dataclass(frozen=True)
class Spec:
    key: str
    label: str
    unit: str
    higher_is_better: bool
    check: str
    """The measurement whose correctness checks this figure depends on."""
    headline: bool = True
    """Shown in the chart and the targets; p50s and the like are only in the table."""


SPECS = (
    Spec(INGEST_SINGLE_1, "durable ingest, 1 event + ack, 1 client", "events/s", True, INGEST_SINGLE_1),
    Spec(INGEST_SINGLE_16, "durable ingest, 1 event + ack, 16 clients", "events/s", True, INGEST_SINGLE_16),
    Spec(INGEST_BATCH, "durable ingest, batches of 100, 1 client", "events/s", True, INGEST_BATCH),
    Spec(TIMELINE_1, "lead timelines, 1 client", "reads/s", True, TIMELINE_1),
    Spec(f"{TIMELINE_1}_p50", "lead timelines, 1 client: p50", "ms", False, TIMELINE_1, False),
    Spec(f"{TIMELINE_1}_p99", "lead timelines, 1 client: p99", "ms", False, TIMELINE_1, False),
    Spec(TIMELINE_4, "lead timelines, 4 clients", "reads/s", True, TIMELINE_4),
    Spec(f"{TIMELINE_4}_p50", "lead timelines, 4 clients: p50", "ms", False, TIMELINE_4, False),
    Spec(f"{TIMELINE_4}_p99", "lead timelines, 4 clients: p99", "ms", False, TIMELINE_4, False),
    Spec(TIMELINE_16, "lead timelines, 16 in flight (16 clients)", "reads/s", True, TIMELINE_16),
    Spec(f"{TIMELINE_16}_p50", "lead timelines, 16 in flight: p50", "ms", False, TIMELINE_16, False),
    Spec(f"{TIMELINE_16}_p99", "lead timelines, 16 in flight: p99", "ms", False, TIMELINE_16, False),
    Spec("scan_p50", "type + 1-hour window scan with snapshots: p50", "ms", False, SCAN),
    Spec("scan_p99", "type + 1-hour window scan with snapshots: p99", "ms", False, SCAN, False),
    Spec(REPLAY, "replay in recorded_at order", "events/s", True, REPLAY),
    Spec("live_rate", "live: appends acknowledged, 1,000/s offered", "events/s", True, LIVE, False),
    Spec("live_p50", "live publish->receive, 1,000 appends/s: p50", "ms", False, LIVE, False),
    Spec("live_p99", "live publish->receive, 1,000 appends/s: p99", "ms", False, LIVE),
    Spec(DISK, "bytes on disk per event after ingest", "B/event", False, DISK),
)
SPEC_BY_KEY = {spec.key: spec for spec in SPECS}
REFERENCE = "leadtrail"
DASH = "\u2013"
"""The en dash of ranges (min\u2013max), written as an escape so that the source stays ASCII."""
DURABLE_PEERS = ("postgres", "redis-always")
CEILING = "ceiling"
CANNED_CEILING = "ceiling-timeline"
POSTGRES = "postgres"
WORKERS = "leadtrail-2w"
CODE_DIRS = ("storage", "server", "client", "proto")


@dataclass
class Run:
    mode: str
    runs: int
    scale: dict[str, Any]
    elapsed_s: float
    work: Workload
    measurements: Measurements


# --------------------------------------------------------------------------- cells


def _figure(run: Run, key: str, system: str) -> Figure | None:
    return run.measurements.figures.get((key, system))


def valid_median(run: Run, key: str, system: str) -> float | None:
    """The median if it was measured and every check behind it passed."""
    figure = _figure(run, key, system)
    outcome = run.measurements.outcomes.get(system)
    if figure is None or not figure.runs or outcome is None:
        return None
    if outcome.invalid(SPEC_BY_KEY[key].check):
        return None
    return figure.median


def ratio(run: Run, key: str, peer: str) -> float | None:
    ours, theirs = valid_median(run, key, REFERENCE), valid_median(run, key, peer)
    if ours is None or theirs is None or theirs == 0:
        return None
    return ours / theirs


def advantage(run: Run, key: str, peer: str) -> float | None:
    """LeadTrail's advantage over the peer, above 1 when LeadTrail is better, whichever way the unit runs."""
    value = ratio(run, key, peer)
    if value is None or value == 0:
        return None
    return value if SPEC_BY_KEY[key].higher_is_better else 1 / value


def _row(run: Run, spec: Spec, outcome: Outcome) -> list[str]:
    system = outcome.system
    cells = [spec.label, system.label, system.setting]
    if outcome.missing:
        return [*cells, "missing", "", "0", ""]
    figure = _figure(run, spec.key, system.name)
    if figure is None or not figure.runs:
        return [*cells, "failed (see problems)", "", "0", ""]
    problems = outcome.invalid(spec.check)
    spread = f"{fmt(min(figure.runs))}{DASH}{fmt(max(figure.runs))}"
    value = f"{fmt(figure.median)} {spec.unit}"
    if problems:
        return [*cells, f"invalid: {problems}"[:160], spread, str(len(figure.runs)), ""]
    if system.name == REFERENCE:
        return [*cells, value, spread, str(len(figure.runs)), "1 (reference)"]
    measured = ratio(run, spec.key, system.name)
    return [*cells, value, spread, str(len(figure.runs)), f"{measured:.2f}" if measured is not None else ""]


# --------------------------------------------------------------------------- targets


def _peers(run: Run) -> list[str]:
    """The other stores measured (not LeadTrail in another setting, not the ceilings)."""
    return [name for name, o in run.measurements.outcomes.items() if o.system.peer and not o.missing]


def targets(run: Run) -> list[tuple[str, str, str]]:
    """The earlier targets against the peers: (target, what was measured, PASS / MISS / n/a)."""
    outcomes = run.measurements.outcomes
    peers = _peers(run)
    durable = [name for name in peers if name in DURABLE_PEERS]
    rows: list[tuple[str, str, str]] = []

    def best(key: str, among: Sequence[str], goal: float, text: str) -> None:
        """LeadTrail's advantage over the best of ``among`` must reach ``goal``."""
        values = {peer: advantage(run, key, peer) for peer in among}
        known = {peer: v for peer, v in values.items() if v is not None}
        if not known:
            rows.append((text, "no valid peer figure", "n/a"))
            return
        peer, value = min(known.items(), key=lambda item: item[1])
        spec = SPEC_BY_KEY[key]
        shown = ratio(run, key, peer)
        measured = f"LeadTrail/{peer} = {shown:.2f}" if shown is not None else ""
        if not spec.higher_is_better:
            measured += f" (advantage {value:.2f}x)"
        rows.append((text, measured, "PASS" if value >= goal else "MISS"))

    best(INGEST_BATCH, durable, 2.0, "batched durable ingest >= 2.0x the best durable peer")
    nats = [p for p in peers if p == "nats"]
    best(INGEST_BATCH, nats, 1.0, "batched durable ingest >= 1.0x NATS JetStream")
    best(INGEST_SINGLE_16, peers, 2.0, "16-client single-event ingest >= 2.0x the best peer (any)")
    for key in (TIMELINE_1, TIMELINE_4):
        postgres = [p for p in peers if p == "postgres"]
        clients = SPEC_BY_KEY[key].label.rpartition(", ")[2]
        best(key, postgres, 1.0, f"lead timelines/s, {clients}, >= 1.0x PostgreSQL")
    best("live_p99", peers, 1.0, "live p99 <= the best peer's")
    best(DISK, [p for p in peers if p in outcomes and DISK in outcomes[p].system.measures], 4.0,
         "bytes per event <= 0.25x the best peer")  # fmt: skip
    return rows


def _between(run: Run, key: str, ours: str, theirs: str) -> float | None:
    """``ours`` median / ``theirs`` median, both valid; None when either is missing."""
    a, b = valid_median(run, key, ours), valid_median(run, key, theirs)
    return None if a is None or b is None or b == 0 else a / b


def speed_targets(run: Run) -> list[tuple[str, str, str]]:
    """Issue 14's targets: (target, the ratio measured in this run, met / missed / n/a)."""
    rows: list[tuple[str, str, str]] = []

    def row(
        text: str, key: str, theirs: str, goal: float, at_least: bool, label: str, extra: str = ""
    ) -> None:
        value = _between(run, key, REFERENCE, theirs)
        if value is None:
            rows.append((text, f"no valid figure for LeadTrail or {label}{extra}", "n/a"))
            return
        met = value >= goal if at_least else value <= goal
        rows.append((text, f"LeadTrail/{label} = {value:.2f}{extra}", "met" if met else "missed"))

    def also(key: str, ours: str, theirs: str, label: str) -> str:
        value = _between(run, key, ours, theirs)
        return f"; {label} = {value:.2f}" if value is not None else ""

    batch = _between(run, INGEST_BATCH, REFERENCE, POSTGRES)
    stretch = "" if batch is None else f" (stretch 2.0: {'met' if batch >= 2.0 else 'missed'})"
    row("durable ingest, batches of 100: >= 1.0x PostgreSQL", INGEST_BATCH, POSTGRES, 1.0, True,
        "PostgreSQL", stretch)  # fmt: skip
    row("single-event Append + ack, 16 clients: >= 0.8x the empty-handler ceiling", INGEST_SINGLE_16,
        CEILING, 0.8, True, "ceiling")  # fmt: skip
    workers = also(INGEST_SINGLE_16, WORKERS, POSTGRES, "LeadTrail 2 workers/PostgreSQL")
    row("single-event Append + ack, 16 clients, vs PostgreSQL (stretch with --workers: >= 1.0x)",
        INGEST_SINGLE_16, POSTGRES, 1.0, True, "PostgreSQL", workers)  # fmt: skip
    for key, clients in ((TIMELINE_1, "1 client"), (TIMELINE_16, "16 in flight")):
        canned = also(key, REFERENCE, CANNED_CEILING, "LeadTrail/ceiling with a canned timeline")
        row(f"lead timelines, {clients}: >= 0.8x the empty-handler ceiling", key, CEILING, 0.8, True,
            "ceiling", canned)  # fmt: skip
        canned = also(f"{key}_p99", REFERENCE, CANNED_CEILING, "p99 over the canned-timeline ceiling's")
        row(f"lead timelines, {clients}: p99 <= 2x the ceiling's p99", f"{key}_p99", CEILING, 2.0, False,
            "ceiling (p99)", canned)  # fmt: skip
    row("type + 1-hour window scan with snapshots: <= 1.0x PostgreSQL's time (p50)", "scan_p50", POSTGRES,
        1.0, False, "PostgreSQL")  # fmt: skip
    row("replay in position order: >= 1.0x PostgreSQL", REPLAY, POSTGRES, 1.0, True, "PostgreSQL")
    live_rate, live_p99 = valid_median(run, "live_rate", REFERENCE), valid_median(run, "live_p99", REFERENCE)
    if live_rate is None or live_p99 is None:
        rows.append(("live: 1,000 single-event appends/s sustained, p99 <= 5 ms", "no valid figure", "n/a"))
    else:
        sustained = live_rate >= 0.98 * 1000
        rows.append(("live: 1,000 single-event appends/s sustained (>= 980/s acknowledged)",
                     f"{fmt(live_rate)} appends/s", "met" if sustained else "missed"))  # fmt: skip
        rows.append(("live: publish->receive p99 <= 5 ms at that rate", f"{fmt(live_p99)} ms",
                     "met" if live_p99 <= 5.0 and sustained else "missed"))  # fmt: skip
    stores = [p for p in _peers(run) if DISK in run.measurements.outcomes[p].system.measures]
    sizes = {p: v for p in stores if (v := valid_median(run, DISK, p)) is not None}
    if sizes:
        smallest = min(sizes, key=lambda p: sizes[p])
        row("bytes on disk per event: <= 0.25x the best peer", DISK, smallest, 0.25, False, smallest)
    else:
        rows.append(("bytes on disk per event: <= 0.25x the best peer", "no valid peer figure", "n/a"))
    compared = [
        f"{SPEC_BY_KEY[key].label} {value:.2f}"
        for key in (INGEST_SINGLE_16, INGEST_BATCH, TIMELINE_16, REPLAY)
        if (value := _between(run, key, WORKERS, REFERENCE)) is not None
    ]
    rows.append(("--workers 2 against 1 worker (2 workers / 1; reported, no goal)",
                 "; ".join(compared) if compared else "not measured (see the workers system's note)",
                 "report"))  # fmt: skip
    return rows


# --------------------------------------------------------------------------- machine


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    info["memory_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    info["cpu"] = line.partition(":")[2].strip()
                    break
    except OSError:
        pass
    try:
        import grpc

        info["grpcio"] = grpc.__version__
    except ImportError:
        pass
    info["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    info["git_commit"] = command_output(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])
    # The code measured is the working tree: say when it differs from the commit named.
    changed = command_output(["git", "-C", ROOT, "status", "--porcelain", "--", *CODE_DIRS])
    info["uncommitted_code_files"] = len(changed.splitlines())
    return info


# --------------------------------------------------------------------------- writing


def markdown(run: Run, info: dict[str, Any], chart_note: str) -> str:
    work, outcomes = run.work, run.measurements.outcomes
    snapshot_sizes = [len(json.dumps(d["lead"], separators=(",", ":"))) for d in work.dataset]
    lines = [
        f"# LeadTrail side by side: {run.mode} run, {info['date']}",
        "",
        f"Machine: {info['cores']} cores, {info.get('memory_gib', '?')} GiB memory, "
        f"{info.get('cpu', 'unknown CPU')}; {info['platform']}; Python {info['python']}, "
        f"grpcio {info.get('grpcio', '?')}; load average at the end {info['load_average_at_end']}. Clients "
        "and servers share the machine (clients: one Python process, asyncio), so compare the ratios, "
        "measured in the same run, rather than absolute figures. LeadTrail code: commit "
        f"{info['git_commit'] or '?'}"
        + (
            f" plus {info['uncommitted_code_files']} uncommitted file(s) in {', '.join(CODE_DIRS)}."
            if info["uncommitted_code_files"]
            else "."
        ),
        "",
        f"Workload: `LeadFlowSimulator` seed {info['seed']}: {len(work.dataset):,} events of "
        f"{work.leads:,} leads (5-8 events a lead, 20 flows, timestamps over 24 h), snapshots of "
        f"{min(snapshot_sizes):,}-{max(snapshot_sizes):,} B as compact JSON (mean "
        f"{sum(snapshot_sizes) / len(snapshot_sizes):,.0f} B, ~30 fields); then {len(work.singles):,} events "
        f"for the single-event ingest and {len(work.live):,} for the live feed. Each figure is the median "
        f"of {run.runs} runs with min{DASH}max; a fresh server and data directory per system per run; "
        f"{run.elapsed_s:.0f} s in all.",
        "",
        "**NATS JetStream does not fsync per message by default**: its publishes are acknowledged before "
        "the data is on stable storage, so it is the fast non-durable reference, not a durable peer. "
        "Redis with `appendfsync everysec` is not durable either (up to a second of acknowledged writes).",
        "",
        "Ratio = LeadTrail / peer (medians). Rates: above 1 means LeadTrail is faster. Latencies and "
        "bytes: below 1 means LeadTrail is better.",
        "",
        f"| workload | system | setting | median | min{DASH}max | runs | LeadTrail/peer |",
        "|---|---|---|---|---|---|---|",
    ]
    for spec in SPECS:
        for outcome in outcomes.values():
            if spec.check in outcome.system.measures:
                lines.append("| " + " | ".join(_row(run, spec, outcome)) + " |")
    lines += ["", "## Earlier targets against the peers (ratios from this run)", ""]
    lines += ["| target | measured | |", "|---|---|---|"]
    lines += [f"| {goal} | {measured} | {verdict} |" for goal, measured, verdict in targets(run)]
    lines += client_cpu(run)
    lines += ["", "## Correctness checks", ""]
    lines.append(
        "Every timeline's event count, every scan's count, the replay's count and the number of events "
        "stored after each ingest are compared with what the generator says they must be; live events must "
        "each arrive once. A figure whose check failed in any run is shown as invalid, without a ratio."
    )
    lines.append("")
    for outcome in outcomes.values():
        system = outcome.system
        if outcome.missing:
            lines.append(f"- {system.label} ({system.setting}): **missing**: {outcome.missing}")
            continue
        if not system.checked:
            lines.append(f"- {system.label} ({system.setting}): nothing to check (not a store)")
            continue
        failed = {figure: p for figure, p in outcome.checks.items() if p}
        passed = sorted(figure for figure, p in outcome.checks.items() if not p)
        if failed:
            details = "; ".join(f"{figure}: {', '.join(p)}" for figure, p in failed.items())
            lines.append(f"- {system.label} ({system.setting}): FAILED: {details}")
        else:
            lines.append(f"- {system.label} ({system.setting}): all passed ({', '.join(passed)})")
    problems = [(o.system, e) for o in outcomes.values() for e in o.errors]
    if problems:
        lines += ["", "## Problems during the runs", ""]
        lines += [f"- {system.label} ({system.setting}): {error}" for system, error in problems]
    lines += ["", "## How each system was run", ""]
    for outcome in outcomes.values():
        if outcome.missing:
            continue
        try:
            lines += [f"- {note}" for note in outcome.system.notes()]
        except Exception as e:  # a note is never worth losing the results for
            lines.append(f"- {outcome.system.label}: (no notes: {e})")
    lines += [
        "- Live: single-event appends, one every millisecond (1,000 appends/s), sent open-loop over 16 "
        "connections (one append in flight on each); latency is the follower's receive time minus the "
        "append's send time, one clock, one process; the first appends are a warm-up and not measured. "
        "The acknowledged rate is the measured events over the time from the first one's scheduled send "
        "to the last acknowledgement: 1,000/s when the system keeps up.",
        "- Timelines, 16 in flight: 16 clients (one connection each), each with one call in flight.",
        "- Bytes on disk: the growth of the whole data directory (allocated blocks, WAL or log included) "
        "from the empty store to after the batched ingest of the data set, per event.",
        "",
        chart_note,
        "",
        "## Targets (issue 14; ratios from this run)",
        "",
        "Each ratio is of medians measured in this run, LeadTrail first. The ceiling is the empty-handler "
        "gRPC service called through the same SDK client with the same requests; the canned-timeline "
        "ceiling answers a realistic timeline instead (transport and client decoding alone).",
        "",
        "| target | measured | |",
        "|---|---|---|",
        *(f"| {goal} | {measured} | {verdict} |" for goal, measured, verdict in speed_targets(run)),
        "",
    ]
    return "\n".join(lines)


def client_cpu(run: Run) -> list[str]:
    """The client's CPU per measurement: on a 2-core machine, what the client burns the server lacks."""
    cores = run.measurements.client_cores
    keys = [key for key in dict.fromkeys(spec.check for spec in SPECS) if key != DISK]
    systems = [name for name, o in run.measurements.outcomes.items() if not o.missing]
    if not cores or not systems:
        return []
    lines = [
        "",
        "## Client CPU (cores kept busy by the benchmark's own process, median)",
        "",
        "Clients and servers share the machine's cores: a client that is expensive to drive leaves its "
        "server less CPU. Includes opening connections and warm-up calls.",
        "",
        "| measurement | " + " | ".join(systems) + " |",
        "|---|" + "---|" * len(systems),
    ]
    for key in keys:
        cells = []
        for name in systems:
            values = sorted(cores.get((key, name), []))
            cells.append(f"{values[len(values) // 2]:.2f}" if values else "")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return lines


def as_json(run: Run, info: dict[str, Any]) -> dict[str, Any]:
    systems = {}
    for name, outcome in run.measurements.outcomes.items():
        system = outcome.system
        systems[name] = {
            "label": system.label,
            "setting": system.setting,
            "version": system.version,
            "status": "missing" if outcome.missing else "measured",
            "missing": outcome.missing,
            "errors": outcome.errors,
            "checks": outcome.checks,
            "notes": [] if outcome.missing else _notes(system),
        }
    figures: dict[str, dict[str, Any]] = {}
    for spec in SPECS:
        row: dict[str, Any] = {}
        for name, outcome in run.measurements.outcomes.items():
            figure = _figure(run, spec.key, name)
            if figure is None or not figure.runs:
                continue
            invalid = outcome.invalid(spec.check)
            row[name] = {**figure.as_json(), "valid": not invalid, "invalid": invalid,
                         "ratio_leadtrail_over": ratio(run, spec.key, name)}  # fmt: skip
        figures[spec.key] = {
            "label": spec.label,
            "unit": spec.unit,
            "higher_is_better": spec.higher_is_better,
            "systems": row,
        }
    return {
        "mode": run.mode,
        "runs": run.runs,
        "scale": run.scale,
        "machine": info,
        "elapsed_s": run.elapsed_s,
        "workload": {
            "seed": info["seed"],
            "dataset_events": len(run.work.dataset),
            "leads": run.work.leads,
            "single_events": len(run.work.singles),
            "live_events": len(run.work.live),
            "scans": [scan.__dict__ for scan in run.work.scans],
        },
        "systems": systems,
        "figures": figures,
        "targets": [{"target": t, "measured": m, "verdict": v} for t, m, v in targets(run)],
        "speed_targets": [{"target": t, "measured": m, "verdict": v} for t, m, v in speed_targets(run)],
        "client_cores": {
            f"{key}/{name}": values for (key, name), values in run.measurements.client_cores.items()
        },
    }


def _notes(system: System) -> list[str]:
    try:
        return system.notes()
    except Exception:
        return []


def chart(run: Run, path: str) -> str:
    """Bars of LeadTrail's advantage per figure and peer; returns the note for the Markdown file."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "Chart: skipped, matplotlib is not installed (`pip install '.[bench]'`)."
    peers = [name for name, o in run.measurements.outcomes.items() if name != REFERENCE and not o.missing]
    specs = [spec for spec in SPECS if spec.headline]
    bars = [
        (spec, peer, value)
        for spec in specs
        for peer in peers
        if (value := advantage(run, spec.key, peer)) is not None
    ]
    if not bars:
        return "Chart: skipped, no ratio to draw (no peer measured)."
    figure, axes = plt.subplots(figsize=(10, 0.32 * len(bars) + 1.5))
    colours = plt.get_cmap("tab10")
    labels = [f"{spec.label} vs {peer}" for spec, peer, _ in bars]
    values = [value for _, _, value in bars]
    axes.barh(range(len(bars)), values, color=[colours(peers.index(peer) % 10) for _, peer, _ in bars])
    axes.set_yticks(range(len(bars)), labels, fontsize=7)
    axes.invert_yaxis()
    axes.set_xscale("log")
    axes.axvline(1.0, color="black", linewidth=0.8)
    for k, value in enumerate(values):
        axes.text(value, k, f" {value:.2f}x", va="center", fontsize=6)
    axes.set_xlabel("LeadTrail's advantage (x, log scale): above 1 LeadTrail is better")
    axes.set_title(f"LeadTrail vs peers, {run.mode} run (median of {run.runs}); NATS: no fsync per message")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return f"Chart: `{os.path.basename(path)}` (LeadTrail's advantage per figure and peer, log scale)."


def write(out: str, stem: str, run: Run) -> list[str]:
    from benchmarks.workload import SEED

    os.makedirs(out, exist_ok=True)
    info = {**machine(), "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "seed": SEED}  # fmt: skip
    png = os.path.join(out, f"{stem}.png")
    chart_note = chart(run, png)
    md_path, json_path = os.path.join(out, f"{stem}.md"), os.path.join(out, f"{stem}.json")
    text = markdown(run, info, chart_note)
    with open(md_path, "w", encoding="utf-8") as md:
        md.write(text)
    with open(json_path, "w", encoding="utf-8") as out_json:
        json.dump(as_json(run, info), out_json, indent=2, default=str)
        out_json.write("\n")
    print(text)
    return [md_path, json_path] + ([png] if os.path.exists(png) else [])
