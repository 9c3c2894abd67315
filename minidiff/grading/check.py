"""``grade --check``: the graders graded, the way CI runs them.

Four promises. The reference (minidiff) passes every case, on inputs drawn from two seeds. The
untouched stub, run in its child like any submission, fails every case as "not started", names
its notebook and has the reference's signature. Every known-wrong variant fails a case. And every
submission of the adversarial suite (``tests/grading_cases/``, graded together in one run, two at
a time) gets the outcome its first line declares: ``full`` (every point), ``caught`` (not every
point) or ``zero`` (no point), while the grader's files, the handed-in files and the machine's
processes are left as they were.
"""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path
from typing import Any

from minidiff.grading import registry, runner
from minidiff.grading.grade import grade_submissions, grade_trusted
from minidiff.grading.spec import Exercise

SEEDS_PER_REFERENCE = 2  # the reference meets two draws: a case passing once and failing once is flaky
CASE_LINE = re.compile(r'"""(ex\d\d) (full|caught|zero): (.+)')  # the first line of an adversarial submission
OUTCOMES = ("full", "caught", "zero")
SUITE = Path(__file__).resolve().parents[2] / "tests" / "grading_cases"
LINGER_S = 1.0  # how long to wait for a process left behind before looking for it
CANARY = Path("/tmp/minidiff-grader-pwned")  # made by the suite's pickle payload, if the parent ever ran it


def suite_cases(folder: Path = SUITE) -> list[tuple[Path, str, str, str]]:
    """(file, exercise id, expected outcome, what it tries) of every adversarial submission in ``folder``."""
    cases = []
    for path in sorted(folder.glob("*.py")) if folder.is_dir() else []:
        match = CASE_LINE.match(path.read_text(encoding="utf-8", errors="replace"))
        if not match:
            raise ValueError(f"{path} must start with '\"\"\"exNN full|caught|zero: what it tries'")
        cases.append((path, match[1], match[2], match[3].strip().rstrip('"')))
    return cases


def fingerprint(folders: list[Path]) -> str:
    """A hash of every file's path and bytes under ``folders``: equal before and after means untouched."""
    digest = hashlib.sha256()
    for folder in folders:
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            digest.update(str(path).encode() + path.read_bytes())
    return digest.hexdigest()


def leftover_processes() -> list[int]:
    """Pids of processes still running under a child's user id (namespaces mode) after grading ended."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            uid = entry.stat().st_uid
        except OSError:
            continue
        if runner.UID_BASE <= uid < runner.UID_BASE + 100_000:
            found.append(int(entry.name))
    return found


def _outcome(report: dict[str, Any]) -> str:
    if report["points"] == report["max_points"] and report["status"] == "passed":
        return "full"
    return "zero" if report["points"] == 0 else "caught"


def _matches(expected: str, got: str) -> bool:
    return got == expected or (expected == "caught" and got == "zero")


def _exercise_problems(exercise: Exercise, stub: dict[str, Any], seed: int, folder: Path) -> list[str]:
    problems = []
    for k in range(SEEDS_PER_REFERENCE):
        for t in grade_trusted(exercise, exercise.reference, seed + k, "reference")["tests"]:
            if t["status"] != "passed":
                problems.append(f"the reference fails '{t['name']}' (seed {seed + k}): {t['status']}: "
                                f"{t['message']}")
    if stub["status"] != "not started":
        problems.append(f"the stub is {stub['status']}, not 'not started': {stub['message']}")
    problems += [f"the stub's {note}" for note in stub["notes"]]
    notebook = exercise.notebook.split(" (")[0]
    if stub["status"] == "not started" and notebook not in stub["message"]:
        problems.append(f"the stub's NotImplementedError does not name {notebook}: {stub['message']!r}")
    if not (folder / exercise.name / "README.md").is_file():
        problems.append(f"{folder / exercise.name / 'README.md'} is missing")
    for variant in exercise.variants:
        if grade_trusted(exercise, variant.fn, seed, f"variant:{variant.name}")["status"] == "passed":
            problems.append(f"the wrong variant '{variant.name}' passes every case")
    return problems


def run_check(exercises: list[Exercise], folder: Path, seed: int, timeout: float, parallel: int, mode: str,
              suite: Path | None = SUITE) -> tuple[bool, str, dict[str, Any]]:
    """(ok, text to print, JSON report) of checking ``exercises``, the stubs in ``folder`` and the suite."""
    start = time.monotonic()
    wanted = {e.id for e in exercises}
    cases = [c for c in suite_cases(suite) if c[1] in wanted] if suite else []
    by_id = {e.id: e for e in registry.EXERCISES}
    protected = [Path(__file__).resolve().parents[1], folder] + ([suite] if suite and suite.is_dir() else [])
    before = fingerprint(protected)
    submissions = ([(e, folder / e.name / e.filename) for e in exercises]
                   + [(by_id[exercise_id], path) for path, exercise_id, _, _ in cases])
    reports = grade_submissions(submissions, seed, timeout, parallel, mode)
    stubs, graded = reports[:len(exercises)], reports[len(exercises):]
    time.sleep(LINGER_S)
    failures, rows, entries = [], [], []
    for exercise, stub in zip(exercises, stubs):
        problems = _exercise_problems(exercise, stub, seed, folder)
        failures += [f"{exercise.id}: {p}" for p in problems]
        rows.append((f"{exercise.id} {exercise.title}", stub["status"], f"{len(exercise.variants)} variants",
                     "ok" if not problems else "FAIL"))
        entries.append(dict(id=exercise.id, ok=not problems, problems=problems, stub_status=stub["status"],
                            variants=[v.name for v in exercise.variants]))
    suite_rows = []
    for (path, exercise_id, expected, what), report in zip(cases, graded):
        got = _outcome(report)
        ok = _matches(expected, got)
        if not ok:
            failures.append(f"{path.name}: expected {expected}, got {report['status']} {report['points']}/"
                            f"{report['max_points']}: {report['message'] or _first_failure(report)}")
        suite_rows.append(dict(case=path.name, exercise=exercise_id, tries=what, expected=expected,
                               status=report["status"], points=report["points"],
                               max_points=report["max_points"], ok=ok))
    if fingerprint(protected) != before:
        failures.append("a submission changed the grader's files, the stubs or the suite on disk")
    if CANARY.exists():
        failures.append(f"{CANARY} exists: code from a submission ran in the grader's own process")
    left = leftover_processes()
    if left:
        failures.append(f"processes left behind by submissions: {left}")
    seconds = time.monotonic() - start
    lines = [f"{a:<34}{b:<14}{c:<14}{d}" for a, b, c, d in [("exercise", "stub", "variants", "")] + rows]
    lines += ["", f"adversarial suite: {len(suite_rows)} submissions"]
    lines += [f"  {'ok ' if r['ok'] else 'BAD'} {r['case']:<40} {r['expected']:<7} {r['status']:<12} "
              f"{r['points']}/{r['max_points']}" for r in suite_rows]
    ok = not failures
    verdict = (f"check passed in {seconds:.1f} s (isolation: {mode}): {len(exercises)} exercises, "
               f"{sum(len(e.variants) for e in exercises)} wrong variants caught, "
               f"{len(suite_rows)} adversarial submissions as expected" if ok else
               f"check FAILED in {seconds:.1f} s:\n" + "\n".join(f"  {f}" for f in failures))
    report = dict(ok=ok, seconds=round(seconds, 2), seed=seed, isolation=mode,
                  exercises_dir=str(folder.resolve()), exercises=entries, suite=suite_rows, failures=failures)
    return ok, "\n".join(lines + ["", verdict]), report


def _first_failure(report: dict[str, Any]) -> str:
    return next((t["message"].splitlines()[0] for t in report["tests"] if t["message"]), "")
