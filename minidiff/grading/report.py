"""Turning what grading processes left behind into points, a table and a JSON report.

Exercise status, in order of precedence: "flagged" (the code uses minidiff, the reference; 0
points), "missing" (no file), "error" (the file does not load), "timed out", "crashed", "not started"
(every test hit the stub's NotImplementedError), "passed" (every test passed), "failed". Tests that
passed before a time-out or crash keep their points.
"""

from __future__ import annotations

import signal
from datetime import datetime, timezone
from typing import Any

from minidiff import __version__
from minidiff.grading.runner import JobResult
from minidiff.grading.spec import Exercise

REPORT_VERSION = 1  # bump when the JSON report's fields change
OUTPUT_LINES = 5  # lines of a crashed process's output quoted in its message


def _ended(result: JobResult) -> str:
    if result.timed_out:
        return f"was stopped after the {result.job.timeout:g} s time limit (an endless loop?)"
    code = result.exitcode
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        how = f"was killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
    else:
        how = f"ended with exit status {code}"
    lines = [line for line in result.output.splitlines() if line.strip()][-OUTPUT_LINES:]
    return how + ("; its last output:\n    " + "\n    ".join(lines) if lines else "")


def exercise_report(exercise: Exercise, result: JobResult) -> dict[str, Any]:
    """The report of one exercise graded by one job (the JSON report's "exercises" entries)."""
    by_kind: dict[str, list[dict]] = {}
    for record in result.records:
        by_kind.setdefault(record["event"], []).append(record)
    load = (by_kind.get("load") or [None])[0]
    results = {r["test"]: r for r in by_kind.get("result", [])}
    started = {r["test"] for r in by_kind.get("start", [])}
    finished = "done" in by_kind
    abnormal = "timed out" if result.timed_out else "crashed"
    tests = []
    for test in exercise.tests:
        if test.name in results:
            status, message = results[test.name]["status"], results[test.name]["message"]
        elif test.name in started:
            status, message = abnormal, f"the grading process {_ended(result)}"
        elif load is not None and load["status"] != "ok":
            status, message = "not run", ""
        else:
            status, message = "not run", "" if finished else "the grading process ended before this test"
        tests.append(dict(name=test.name, status=status, points=test.points if status == "passed" else 0,
                          max_points=test.points, message=message))
    flags = (load or {}).get("flags", []) + sum((r["flags"] for r in by_kind.get("done", [])), [])
    message = ""
    if load is None:
        status, message = abnormal, f"the grading process {_ended(result)} while loading the file"
    elif load["status"] != "ok":
        status, message = load["status"], load["message"]
    elif not finished:  # a process stopped after its last test still counts its results
        status = abnormal
    elif all(t["status"] == "not started" for t in tests):
        status, message = "not started", tests[0]["message"]
    else:
        status = "passed" if all(t["status"] == "passed" for t in tests) else "failed"
    if flags:
        status, message = "flagged", "0 points: the code uses what it should write. " + "; ".join(flags)
    points = 0 if flags else sum(t["points"] for t in tests)
    return dict(id=exercise.id, name=exercise.name, title=exercise.title, function=exercise.function,
                target=result.job.target, status=status, points=points, max_points=exercise.max_points,
                seconds=round(result.seconds, 3), message=message, flags=flags,
                notes=(load or {}).get("notes", []), tests=tests)


def grade_report(exercises: list[dict[str, Any]], target: str, exercises_dir: str) -> dict[str, Any]:
    """The whole JSON report."""
    return dict(report_version=REPORT_VERSION, minidiff_version=__version__, target=target,
                exercises_dir=exercises_dir, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                total=dict(points=sum(e["points"] for e in exercises),
                           max_points=sum(e["max_points"] for e in exercises)),
                exercises=exercises)


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
                lines.append(f"  ({not_run} more test{plural} not run: the grading process had ended)")
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
