"""The markdown fragment for BENCHMARKS.md: machine, versions, command, rates and ratios."""

from __future__ import annotations

import importlib.metadata as md
import platform
from typing import Any

# (numerator case, denominator case, workload prefix, target) -> "gristmill / X >= target"
TARGETS = {
    ("(a)", "limit: combined bound"): 0.95, ("(b)", "limit: combined bound"): 0.95,
    ("(a)", "seed naive"): 3.0, ("(b)", "seed naive"): 3.0,
    ("(a)", "seed tuned"): 1.0, ("(b)", "seed tuned"): 1.0,
    ("(a)", "DataLoader"): 2.0, ("(b)", "DataLoader"): 1.0,
    ("(c)", "OpenCV DNN"): 1.2,
}


def _versions() -> str:
    names = ("torch", "numpy", "pillow", "simplejpeg", "onnxruntime", "h5py")
    found = []
    for name in names:
        try:
            found.append(f"{name} {md.version(name)}")
        except md.PackageNotFoundError:
            continue
    return f"Python {platform.python_version()}, " + ", ".join(found)


def render(rows: list[Any], *, size: str, seconds: float, command: str, machine: str) -> str:
    """Rates per workload, then gristmill's ratio to each other case and its target."""
    lines = [f"### Benchmarks ({size})", "", f"- machine: {machine}", f"- versions: {_versions()}",
             f"- command: `{command}` ({seconds:.0f} s in all)", "",
             "| workload | case | images | seconds | img/s | gristmill ÷ case | target | note |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    # limits are steady-state rates, so gristmill's steady state is set against them; the
    # alternatives are timed end to end (their start-up included), and so is gristmill against them
    ours = {r.workload: r.rate for r in rows if r.case == "gristmill"}
    steady = {r.workload: r.rate for r in rows if r.case == "gristmill steady state"}
    for r in rows:
        if r.workload in ("memory", "scale"):
            continue
        ratio, target = "", ""
        mine = (steady if r.case.startswith("limit") else ours).get(r.workload)
        if not r.case.startswith("gristmill") and mine and r.rate:
            ratio = f"{mine / r.rate:.2f}×"
            goal = TARGETS.get((r.workload[:3], r.case))
            target = f"≥ {goal:g}" if goal else ""
        lines.append(f"| {r.workload} | {r.case} | {r.images} | {r.seconds:.1f} | {r.rate:.1f} | "
                     f"{ratio} | {target} | {r.note} |")
    mem = [r for r in rows if r.workload == "memory"]
    if len(mem) == 2:
        one, four = (getattr(r, "pss", 0.0) for r in mem)
        lines += ["", f"- memory, ResNet-50 shape: peak total PSS 1 worker {one:.0f} MB, "
                      f"4 workers {four:.0f} MB: ratio {four / max(one, 1):.2f} (target ≤ 1.5)"]
    for r in (r for r in rows if r.workload == "scale"):
        target = ("< 60 s, < 2 GB" if "loose names" in r.case else
                  "< 60 s" if "shards of" in r.case else "< 10 s, < 1 GB")
        lines.append(f"- scale, {r.case}: {r.seconds:.2f} s, {r.note} (target {target})")
    return "\n".join(lines) + "\n"
