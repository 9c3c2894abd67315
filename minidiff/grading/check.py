"""``grade --check``: the tests themselves are tested, the way CI runs them.

Three promises, each checked on every exercise: the reference (minidiff) passes every test, twice in
two processes so a flaky test shows; the untouched stub fails every test as "not started", names the
notebook that teaches it, and has the reference's signature; every known-wrong variant fails at
least one test.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from minidiff.grading.report import exercise_report
from minidiff.grading.runner import run_jobs
from minidiff.grading.spec import Exercise
from minidiff.grading.worker import Job, student_path

REFERENCE_RUNS = 2  # the issue asks for two: a test that passes once and fails once is flaky


def _roles(exercise: Exercise) -> list[str]:
    return ["reference"] * REFERENCE_RUNS + ["student"] + [f"variant:{v.name}" for v in exercise.variants]


def _problems(exercise: Exercise, reports: dict[str, list[dict]], exercises_dir: str) -> list[str]:
    """Everything wrong with one exercise's tests, stub and variants; empty when all is well."""
    problems = []
    for run, ref in enumerate(reports["reference"], start=1):
        for t in ref["tests"]:
            if t["status"] != "passed":
                problems.append(f"the reference fails '{t['name']}' (run {run}): {t['status']}: {t['message']}")
        if ref["status"] != "passed" and not any(t["status"] != "passed" for t in ref["tests"]):
            problems.append(f"the reference run {run} is {ref['status']}: {ref['message']}")
    stub = reports["student"][0]
    path = student_path(exercise, exercises_dir)
    if stub["status"] in ("missing", "error", "flagged", "timed out", "crashed"):
        problems.append(f"the stub {path} is {stub['status']}: {stub['message']}")
    problems += [f"the stub's {note}" for note in stub["notes"]]
    for t in stub["tests"]:
        if t["status"] == "passed":
            problems.append(f"the untouched stub passes '{t['name']}': that test checks nothing")
        elif t["status"] not in ("not started", "not run"):
            problems.append(f"on the stub, '{t['name']}' is {t['status']}, not 'not started': {t['message']}")
    notebook = exercise.notebook.split(" (")[0]
    if stub["status"] == "not started" and notebook not in stub["message"]:
        problems.append(f"the stub's NotImplementedError does not name {notebook}: {stub['message']!r}")
    if not (path.parent / "README.md").is_file():
        problems.append(f"{path.parent / 'README.md'} is missing")
    for variant in exercise.variants:
        report = reports[f"variant:{variant.name}"][0]
        if all(t["status"] == "passed" for t in report["tests"]):
            problems.append(f"the wrong variant '{variant.name}' passes every test")
    return problems


def run_check(exercises: list[Exercise], exercises_dir: str, timeout: float, parallel: int
              ) -> tuple[bool, str, dict[str, Any]]:
    """(ok, text to print, JSON report) of checking ``exercises`` against the stubs in ``exercises_dir``."""
    start = time.monotonic()
    plan = [(exercise, role) for exercise in exercises for role in _roles(exercise)]
    results = run_jobs([Job(e.id, role, exercises_dir, timeout) for e, role in plan], parallel)
    grouped: dict[str, dict[str, list[dict]]] = {e.id: {} for e in exercises}
    for (exercise, role), result in zip(plan, results):
        grouped[exercise.id].setdefault(role, []).append(exercise_report(exercise, result))
    rows, entries, failures = [], [], []
    for exercise in exercises:
        reports = grouped[exercise.id]
        problems = _problems(exercise, reports, exercises_dir)
        failures += [f"{exercise.id}: {p}" for p in problems]
        n_tests = len(exercise.tests)
        ref_passed = [sum(t["status"] == "passed" for t in r["tests"]) for r in reports["reference"]]
        caught = {v.name: [t["name"] for t in reports[f"variant:{v.name}"][0]["tests"] if t["status"] != "passed"]
                  for v in exercise.variants}
        rows.append((f"{exercise.id} {exercise.title}", ", ".join(f"{p}/{n_tests}" for p in ref_passed),
                     reports["student"][0]["status"], f"{sum(bool(c) for c in caught.values())}/{len(caught)} caught",
                     "ok" if not problems else "FAIL"))
        entries.append(dict(id=exercise.id, name=exercise.name, ok=not problems, problems=problems,
                            reference_passed=ref_passed, tests=n_tests, stub_status=reports["student"][0]["status"],
                            variants={name: dict(caught=bool(tests), caught_by=tests)
                                      for name, tests in caught.items()}))
    seconds = time.monotonic() - start
    header = ("exercise", "reference", "stub", "variants", "")
    widths = [max(len(str(row[i])) for row in rows + [header]) + 2 for i in range(5)]
    lines = ["".join(f"{cell:<{w}}" for cell, w in zip(row, widths)).rstrip() for row in [header] + rows]
    lines.insert(1, "-" * len(lines[0]))
    n_variants = sum(len(e.variants) for e in exercises)
    ok = not failures
    verdict = (f"check passed in {seconds:.1f} s: {len(exercises)} exercises, "
               f"{sum(len(e.tests) for e in exercises)} tests, {n_variants} wrong variants all caught"
               if ok else f"check FAILED in {seconds:.1f} s:\n" + "\n".join(f"  {f}" for f in failures))
    report = dict(ok=ok, seconds=round(seconds, 2), exercises_dir=str(Path(exercises_dir).resolve()),
                  exercises=entries)
    return ok, "\n".join(lines + ["", verdict]), report
