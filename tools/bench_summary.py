"""One summary of a ``make bench`` run: the machine, then each benchmark's headline figures
and the baselines it measured in the same run, as markdown and JSON.

Each benchmark calls ``write_result`` at its end: with ``BENCH_RESULTS_DIR`` set (``make
bench`` sets it) that writes ``<dir>/<name>.json``; otherwise it does nothing.
``python -m tools.bench_summary --from DIR --out bench-results`` collects the files into
``bench-results/<UTC timestamp>.md`` and ``.json`` so that runs can be compared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ENV = "BENCH_RESULTS_DIR"
EXPECTED = ("intake", "router_decide", "router_e2e", "sla", "notifier")
Figure = float | int | str | None


def write_result(
    name: str,
    figures: Mapping[str, Figure],
    baselines: Mapping[str, Figure] | None = None,
    target: str = "",
    notes: str = "",
) -> Path | None:
    """Write one benchmark's result file (a no-op unless ``BENCH_RESULTS_DIR`` is set)."""
    where = os.environ.get(ENV)
    if not where:
        return None
    out = Path(where)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    data = {
        "name": name,
        "figures": dict(figures),
        "baselines": dict(baselines or {}),
        "target": target,
        "notes": notes,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str))
    return path


def _read(path: str, key: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    mem = _read("/proc/meminfo", "MemTotal")
    ram_gib = round(int(mem.split()[0]) / 1024 / 1024, 1) if mem else None
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "cpu": _read("/proc/cpuinfo", "model name") or platform.processor() or "unknown",
        "cores": os.cpu_count(),
        "ram_gib": ram_gib,
        "python": platform.python_version(),
        "os": platform.platform(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "commit": commit or None,
    }


def collect(directory: Path) -> list[dict[str, Any]]:
    """The result files, in the order of ``EXPECTED`` then any others."""
    found = {}
    for p in sorted(directory.glob("*.json")):
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        found[str(data.get("name", p.stem))] = data

    def rank(name: str) -> tuple[int, str]:
        for i, e in enumerate(EXPECTED):
            if name == e or name.startswith(e + "_"):
                return i, name
        return len(EXPECTED), name

    return [found[n] for n in sorted(found, key=rank)]


def _fmt(v: Figure) -> str:
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return "-" if v is None else str(v)


def render_markdown(
    mach: Mapping[str, Any], results: Sequence[Mapping[str, Any]], started: str
) -> str:
    lines = [
        f"# Benchmarks, {started}",
        "",
        "| machine | |",
        "|---|---|",
        *(f"| {k} | {_fmt(v) if not isinstance(v, list) else v} |" for k, v in mach.items()),
        "",
        "Figures measured on a shared machine are noisy; the same-run baselines are the"
        " fairer comparison.",
    ]
    names = {str(r.get("name")) for r in results}
    missing = [e for e in EXPECTED if not any(n == e or n.startswith(e + "_") for n in names)]
    for r in results:
        lines += ["", f"## {r.get('name')}", "", "| figure | value | kind |", "|---|---|---|"]
        for k, v in dict(r.get("figures", {})).items():
            lines.append(f"| {k} | {_fmt(v)} | measured |")
        for k, v in dict(r.get("baselines", {})).items():
            lines.append(f"| {k} | {_fmt(v)} | baseline (same run) |")
        if r.get("target"):
            lines += ["", f"Target: {r['target']}"]
        if r.get("notes"):
            lines += ["", str(r["notes"])]
    if missing:
        lines += ["", f"No result from: {', '.join(missing)} (failed or not run)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.bench_summary")
    p.add_argument("--from", dest="src", required=True, help="directory of result files")
    p.add_argument("--out", default="bench-results")
    a = p.parse_args(argv)
    results = collect(Path(a.src))
    started = time.strftime("%Y-%m-%dT%H%M%SZ", time.gmtime())
    mach = machine()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    md = out / f"{started}.md"
    md.write_text(render_markdown(mach, results, started))
    (out / f"{started}.json").write_text(
        json.dumps({"at": started, "machine": mach, "results": results}, indent=2)
    )
    print(f"summary: {md} and {md.with_suffix('.json')} ({len(results)} benchmarks)")
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
