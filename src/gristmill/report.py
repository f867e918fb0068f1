"""``OUT/report.html``: one self-contained page about the whole job, rebuilt from OUT alone.

Sources: the run logs (``runlog``: every run of the job, resumes included) and the job as it stands
(``outdir.reopen``: shards, committed markers and their error rows, through the format's sink).
Charts are inline SVG (``svg.py``); there is no script and nothing is fetched (the page forbids it
in its Content-Security-Policy), so it opens offline, from an e-mail or a CI artefact. Time is "job
time": each run's seconds, the runs placed back to back, so that a resume days later does not squash
the charts.
"""

from __future__ import annotations

import collections
import json
import os
import re
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from . import ledger, outdir, runlog
from .errors import SpecError
from .outdir import JobState
from .svg import esc, line_chart, stacked_bars, timeline

REPORT_FILE = "report.html"
EXAMPLES = 3
COLOURS = {"computing": "#1f77b4", "writing": "#9467bd", "waiting": "#c7c7c7",
           "decoding": "#ff7f0e"}


@dataclass
class Run:
    """One run of the job, from its log, placed at ``offset`` seconds of job time."""

    start: dict[str, Any]
    events: list[dict[str, Any]]
    end: dict[str, Any] | None
    offset: float = 0.0

    @property
    def t0(self) -> float:
        return float(self.start["time"])

    @cached_property  # asked once per event placed (``at``): computed once, not per event
    def seconds(self) -> float:
        """Start to the last thing it saw (its end line, or the last event of a killed run)."""
        last = max((e.get(k) or self.t0 for e in self.events for k in ("time", "finished")),
                   default=self.t0)
        return max(0.0, float(last) - self.t0)

    def at(self, wall: float) -> float:
        """Job time of a wall-clock instant of this run."""
        return self.offset + min(max(0.0, wall - self.t0), self.seconds)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return self._by_kind.get(kind, [])

    @cached_property
    def _by_kind(self) -> dict[str, list[dict[str, Any]]]:
        grouped: dict[str, list[dict[str, Any]]] = {}
        for e in self.events:
            grouped.setdefault(e["event"], []).append(e)
        return grouped


@dataclass
class Process:
    """A worker process: its budget, its lifetime in a run, the stage seconds of its shards."""

    run: int
    worker: int
    pid: int
    device: str
    threads: int
    loaders: int
    begin: float
    stop: float = 0.0
    seconds: dict[str, float] = field(default_factory=lambda: collections.defaultdict(float))


def load_runs(out: str) -> list[Run]:
    runs, offset = [], 0.0
    for events in runlog.read_runs(out):
        ends = [e for e in events if e["event"] == "end"]
        run = Run(events[0], events[1:], ends[-1] if ends else None, offset)
        offset += run.seconds
        runs.append(run)
    return runs


def processes(runs: list[Run]) -> list[Process]:
    """Worker processes of every run; each receipt is charged to the process live at its end."""
    found: list[Process] = []
    for i, run in enumerate(runs):
        mine: list[Process] = []
        run_end = run.t0 + run.seconds
        for e in run.of("ready"):
            for p in mine:
                if p.worker == e["worker"] and not p.stop:
                    p.stop = e["time"]  # its replacement is ready: it was gone before
            mine.append(Process(i, e["worker"], e["pid"], e["device"], e["threads"],
                                e["loaders"], e["time"] - e.get("setup_seconds", 0.0)))
        for e in run.of("replaced"):
            for p in mine:
                if p.pid == e["pid"] and (not p.stop or p.stop > e["time"]):
                    p.stop = e["time"]
        for e in run.of("shard"):
            live = [p for p in mine if p.worker == e["worker"] and p.begin <= e["finished"]]
            if live:
                for k, v in e.get("stage_seconds", {}).items():
                    live[-1].seconds[k] += v
        for p in mine:
            p.stop = p.stop or run_end
        found += sorted(mine, key=lambda p: (p.worker, p.begin))
    return found


def utilisation(p: Process) -> tuple[dict[str, float], dict[str, float]]:
    """(worker fractions: computing/writing/waiting, loader fractions: decoding/waiting)."""
    wall = max(p.stop - p.begin, 1e-9)
    model = min(1.0, p.seconds["model"] / wall)
    write = min(1.0 - model, p.seconds["write"] / wall)
    decode = min(1.0, p.seconds["load"] / (wall * max(1, p.loaders)))
    return ({"computing": model, "writing": write, "waiting": 1.0 - model - write},
            {"decoding": decode, "waiting": 1.0 - decode})


def bottleneck(procs: list[Process]) -> str:
    """The bottleneck in words, from the summed process time of every run."""
    wall = sum(p.stop - p.begin for p in procs)
    if wall <= 0:
        return "no worker time recorded yet"
    model = sum(p.seconds["model"] for p in procs) / wall
    write = sum(p.seconds["write"] for p in procs) / wall
    loader_wall = sum((p.stop - p.begin) * max(1, p.loaders) for p in procs)
    decode = sum(p.seconds["load"] for p in procs) / loader_wall
    worker_wait, loader_wait = max(0.0, 1 - model - write), max(0.0, 1 - decode)
    if write > model and write > decode:
        return f"write-bound: workers spent {write:.0%} of their time writing shards"
    if loader_wait >= worker_wait:
        return (f"model-bound: loaders waited {loader_wait:.0%} of the time "
                f"(the model computed {model:.0%} of the time)")
    return (f"decode-bound: the model waited {worker_wait:.0%} of the time for decoded "
            f"batches (loaders decoded {decode:.0%} of the time)")


def throughput(runs: list[Run]) -> tuple[list[tuple[float, float]], float]:
    """(job time, items/s) per time bin from the shard receipts; and the job time's end."""
    points: list[tuple[float, float]] = []
    for run in runs:
        if run.seconds <= 0:
            continue
        bins = max(4, min(60, int(run.seconds / 2)))
        width = run.seconds / bins
        counts = [0] * bins
        for e in run.of("shard"):
            k = min(bins - 1, int((e["finished"] - run.t0) / width)) if e["finished"] else -1
            if k >= 0:
                counts[k] += e["ok"] + e["errors"]
        points += [(run.offset + (k + 0.5) * width, c / width) for k, c in enumerate(counts)]
    end = runs[-1].offset + runs[-1].seconds if runs else 0.0
    return points, end


def shard_timeline(runs: list[Run]) -> str:
    lanes = sorted({(e["worker"]) for r in runs for e in r.of("ready") + r.of("shard")})
    if not lanes:
        return "<p>No shard was computed yet.</p>"
    row = {w: i for i, w in enumerate(lanes)}
    retried = {e["shard"] for r in runs for e in r.of("retried") + r.of("failed")}
    bars, marks = [], []
    for run in runs:
        for e in run.of("shard"):
            again = e["shard"] in retried
            colour = "#d62728" if again else ("#2ca02c" if e["committed"] else "#bbbbbb")
            tip = (f"shard {e['shard']}: {e['ok']} ok, {e['errors']} errors, "
                   f"{e['finished'] - e['started']:.1f} s" + (" (after a retry)" if again else "")
                   + ("" if e["committed"] else " (already committed by another attempt)"))
            if e["worker"] in row:
                bars.append((row[e["worker"]], run.at(e["started"]), run.at(e["finished"]),
                             colour, tip))
        for e in run.of("replaced"):
            if e["worker"] in row:
                marks.append((row[e["worker"]], run.at(e["time"]), "#d62728",
                              f"worker {e['worker']} (pid {e['pid']}) replaced: {e['reason']}; "
                              f"shards {e['shards']} went back to the queue"))
        for e in run.of("ready"):
            if e["worker"] in row:
                marks.append((row[e["worker"]], run.at(e["time"]), "#2ca02c",
                              f"worker {e['worker']} ready (pid {e['pid']}, {e['device']})"))
    _, end = throughput(runs)
    bounds = [(r.offset, f"run {i + 1}") for i, r in enumerate(runs)]
    legend = ('<p class="legend"><span style="color:#2ca02c">■</span> shard committed '
              '<span style="color:#d62728">■</span> shard retried '
              '<span style="color:#bbbbbb">■</span> duplicate attempt '
              '<span style="color:#2ca02c">▼</span> worker ready '
              '<span style="color:#d62728">▼</span> worker replaced</p>')
    return timeline([f"worker {w}" for w in lanes], bars, x_max=end or 1.0, marks=marks,
                    runs=bounds, label="shards per worker over job time") + legend


def item_errors(state: JobState | None) -> list[tuple[str, str, int, list[str]]]:
    """The error rows still standing, grouped by (stage, reason): count and a few names."""
    groups: dict[tuple[str, str], list[str]] = collections.defaultdict(list)
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    for _, item, stage, message in state.error_rows() if state is not None else ():
        key = (stage, _reason(message, item))
        counts[key] += 1
        if len(groups[key]) < EXAMPLES:
            groups[key].append(f"{item}: {message}")
    return [(s, r, n, groups[(s, r)]) for (s, r), n in counts.most_common()]


def _reason(message: str, item: str) -> str:
    """A message without what varies from item to item (its name, paths, numbers)."""
    text = message.replace(item, "…")
    text = re.sub(r"'[^']*/[^']*'|\"[^\"]*/[^\"]*\"|/\S+", "…", text)
    return re.sub(r"\d+", "N", text)[:200]


def _table(head: list[str], rows: list[list[Any]]) -> str:
    cells = "".join(f"<th>{esc(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>"


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def _summary(state: JobState | None, runs: list[Run]) -> tuple[str, list[list[Any]]]:
    where = ""
    if state is not None:
        ok, errors, committed = state.ok, state.errors, len(state.done)
        items, total = sum(s.items for s in state.shards), len(state.shards)
        if state.estimated:
            items = f"about {items}"
        box = state.containers()
        if box is not None:
            where = (f"; {box.done} of {box.total} containers done"
                     + (f" ({box.bytes_done / 1e6:.1f} of {box.bytes_total / 1e6:.1f} MB)"
                        if box.bytes_total else ""))
    else:  # OUT holds a job whose input list was never frozen: nothing ran yet
        last = runs[-1].start if runs else {}
        ok = errors = committed = 0
        items, total = last.get("items", "?"), last.get("shards", "?")
    line = (f"{ok + errors} of {items} items done ({ok} ok, {errors} errors); "
            f"{committed} of {total} shards committed{where}; {len(runs)} run(s), "
            f"{sum(r.seconds for r in runs):.1f} s of run time")
    rows = []
    for i, r in enumerate(runs):
        end = r.end or {}
        rows.append([i + 1, r.start.get("run", ""), _when(r.t0), f"{r.seconds:.1f}",
                     end.get("outcome", "no end recorded (killed?)"),
                     end.get("items", sum(e["ok"] + e["errors"] for e in r.of("shard"))),
                     end.get("shards_committed", sum(e["committed"] for e in r.of("shard"))),
                     len(r.of("retried")), len(r.of("replaced")), r.start.get("command", "")])
    return line, rows


def _utilisation_section(procs: list[Process]) -> str:
    rows = []
    for p in procs:
        work, load = utilisation(p)
        name = f"run {p.run + 1} worker {p.worker} (pid {p.pid})"
        rows.append((name, [(k, v, COLOURS[k]) for k, v in work.items()]))
        rows.append((f"  its {p.loaders} loader(s)", [(k, v, COLOURS[k]) for k, v in load.items()]))
    if not rows:
        return "<p>No worker became ready.</p>"
    return (f'<p class="verdict">{esc(bottleneck(procs))}</p>'
            + stacked_bars(rows, label="fraction of time per process") + _model_shares(procs))


def _model_shares(procs: list[Process]) -> str:
    """Each model's share of the model time, for a job of several models (``model:NAME``)."""
    spent: dict[str, float] = collections.defaultdict(float)
    for p in procs:
        for key, value in p.seconds.items():
            if key.startswith(MODEL_PREFIX):
                spent[key[len(MODEL_PREFIX):]] += value
    total = sum(spent.values())
    if not total:
        return ""
    shares = ", ".join(f"{k} {v / total:.0%}" for k, v in spent.items())
    return f'<p id="models">Model time by model: {esc(shares)}</p>'


def _duplicates_section(state: JobState | None) -> str:
    from .duplicates import checked_by_report, find

    if state is not None and state.inputs.has_units and not checked_by_report(state):
        return (f'<h3 id="duplicates">Repeated keys</h3><p>Not checked here for {state.ok} rows '
                "(the check holds every name in memory): <code>gristmill inspect OUT</code> "
                "checks them.</p>")
    found = find(state) if state is not None else None
    if found is None:
        return ""
    rows = [[d.key, d.count, " | ".join(d.containers)] for d in found.first]
    return (f'<h3 id="duplicates">Repeated keys</h3><p>{esc(found.line())}</p>'
            + _table(["key", "copies", "containers"], rows))


def _errors_section(state: JobState | None, runs: list[Run]) -> str:
    parts = []
    items = item_errors(state)
    if items:
        parts.append(_table(["stage", "reason", "items", "examples"],
                            [[s, r, n, " | ".join(ex)] for s, r, n, ex in items]))
    else:
        parts.append("<p>No item failed.</p>")
    shard_fail: dict[str, list[str]] = collections.defaultdict(list)
    for i, run in enumerate(runs):
        for e in run.of("failed") + run.of("retried"):
            shard_fail[e["reason"]].append(f"run {i + 1} shard {e['shard']}")
        for e in run.of("replaced"):
            shard_fail[f"worker replaced: {e['reason']}"].append(
                f"run {i + 1} worker {e['worker']} pid {e['pid']}")
        for e in run.of("crashed"):
            shard_fail[f"worker {e['where']}: {e['error']}"].append(f"run {i + 1}")
    if shard_fail:
        parts.append("<h3>Shard and process failures</h3>")
        parts.append(_table(["reason", "times", "examples"],
                            [[r, len(ex), ", ".join(ex[:EXAMPLES])]
                             for r, ex in sorted(shard_fail.items(), key=lambda kv: -len(kv[1]))]))
    return "".join(parts)


MODEL_PREFIX = "model:"  # a receipt's seconds of one model of several (engines/runner.py)
# nothing may be fetched or run: a page that tried would log a console error (the test looks)
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
CSS = """body{font-family:sans-serif;margin:24px;max-width:980px;color:#222}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:12px;margin:8px 0}td,th{border:1px solid #ddd;
padding:3px 6px;text-align:left;vertical-align:top}pre{background:#f6f6f6;padding:8px;
font-size:11px;overflow:auto;max-height:320px}.verdict{font-weight:bold;font-size:15px}
.legend{font-size:12px}svg.chart{display:block;margin:6px 0}"""


def build(out: str) -> str:
    """The report page for OUT, as one HTML string."""
    runs = load_runs(out)
    try:
        state: JobState | None = outdir.reopen(out)
    except SpecError:
        state = None
    procs = processes(runs)
    points, end = throughput(runs)
    line, run_rows = _summary(state, runs)
    last = runs[-1].start if runs else {}
    bounds = [(r.offset, f"run {i + 1}") for i, r in enumerate(runs)]
    chart = line_chart(points, x_max=end or 1.0, xlabel="job time (s, runs back to back)",
                       ylabel="items/s", marks=bounds, label="throughput over job time")
    job = json.dumps(last.get("spec", {}), indent=1, sort_keys=True)
    setup = json.dumps({"machine": last.get("machine"), "versions": last.get("versions"),
                        "workers": last.get("plans")}, indent=1)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<title>gristmill report: {esc(out)}</title><style>{CSS}</style></head><body>
<h1>gristmill report: {esc(out)}</h1>
<p id="summary">{esc(line)}</p>
<h2>Throughput</h2>{chart}
<h2>Where the time went</h2>{_utilisation_section(procs)}
<h2>Shards per worker</h2>{shard_timeline(runs)}
<h2>Errors</h2>{_errors_section(state, runs)}{_duplicates_section(state)}
<h2>Runs</h2>{_table(["run", "id", "started", "seconds", "outcome", "items", "committed",
                      "retries", "replaced", "command"], run_rows)}
<h2>Job</h2><pre>{esc(job)}</pre>
<h2>Machine, versions, workers (last run)</h2><pre>{esc(setup)}</pre>
<p class="legend">Written {esc(_when(time.time()))} from {esc(out)}.</p>
</body></html>
"""


def write_report(out: str) -> str:
    """Write ``OUT/report.html`` atomically; returns its path."""
    path = os.path.join(out, REPORT_FILE)
    ledger.write_atomic(path, build(out).encode("utf-8"))
    return path
