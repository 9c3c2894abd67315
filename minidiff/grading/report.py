"""The grading report: the JSON a teacher keeps, the details and the table a student reads.

The report is written by the parent alone, after every child process is gone, to a temporary
file in the target's folder that is then renamed over the target: a reader sees the old report
or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from minidiff import __version__

REPORT_VERSION = 2  # 2: seed, isolation and seconds added; tests are graded cases drawn from the seed


def grade_report(exercises: list[dict[str, Any]], target: str, exercises_dir: str, seed: int,
                 isolation: tuple[str, str], seconds: float) -> dict[str, Any]:
    """The whole JSON report; ``seed`` reruns the same inputs (``grade --seed``)."""
    return dict(report_version=REPORT_VERSION, minidiff_version=__version__, target=target,
                exercises_dir=exercises_dir, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                seed=seed, isolation=dict(mode=isolation[0], detail=isolation[1]), seconds=round(seconds, 2),
                total=dict(points=sum(e["points"] for e in exercises),
                           max_points=sum(e["max_points"] for e in exercises)),
                exercises=exercises)


def write_json(path: str | Path, report: dict[str, Any]) -> None:
    """Write ``report`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, target)


def _indent(text: str, prefix: str) -> str:
    return "\n".join(prefix + line for line in text.splitlines())


def render_details(report: dict[str, Any]) -> str:
    """What went wrong, exercise by exercise: the part to read above the table."""
    blocks = []
    for e in report["exercises"]:
        if e["status"] == "passed" and not e["notes"]:
            continue
        lines = [f"{e['id']} {e['title']}: {e['status']}"]
        if e["message"]:
            lines.append(_indent(e["message"], "  "))
        lines += [f"  note: {note}" for note in e["notes"]]
        if e["status"] not in ("not started", "missing", "error", "passed"):
            for t in e["tests"]:
                if t["status"] not in ("passed", "not run"):
                    lines.append(f"  x {t['name']} [{t['max_points']} pts]: {t['status']}")
                    if t["message"]:
                        lines.append(_indent(t["message"], "      "))
            not_run = sum(t["status"] == "not run" for t in e["tests"])
            if not_run:
                plural = "s" if not_run > 1 else ""
                lines.append(f"  ({not_run} more case{plural} not run: the grading process had ended)")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def render_table(report: dict[str, Any]) -> str:
    """Points per exercise and the total."""
    rows = [(f"{e['id']} {e['title']}", e["status"], f"{e['points']}/{e['max_points']}")
            for e in report["exercises"]]
    total = report["total"]
    rows.append(("total", "", f"{total['points']}/{total['max_points']}"))
    width = max(len(r[0]) for r in rows) + 2
    status_width = max(len(r[1]) for r in rows) + 2
    header = f"{'exercise':<{width}}{'status':<{status_width}}{'points':>7}"
    lines = [header, "-" * len(header)]
    for name, status, points in rows:
        if name == "total":
            lines.append("-" * len(header))
        lines.append(f"{name:<{width}}{status:<{status_width}}{points:>7}")
    return "\n".join(lines)
