"""``python -m minidiff grade``: grade the exercises, check the graders, or list what there is.

Exit status: 0 when every graded test passed (or the check passed), 1 when some did not, 2 for bad
input (an unknown exercise or variant, a non-positive time limit, a missing folder), with a message
and no traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Optional

import minidiff
from minidiff.grading import registry
from minidiff.grading.check import run_check
from minidiff.grading.report import exercise_report, grade_report, render_details, render_table
from minidiff.grading.runner import run_jobs
from minidiff.grading.worker import Job

DEFAULT_TIMEOUT_S = 30.0  # per exercise: its tests take well under a second once the process is up
DEFAULT_JOBS = 2  # processes at once: the course machine has two cores
TARGETS = ("student", "reference", "variant:NAME")


class UsageError(Exception):
    """Bad input: printed as ``error: ...`` with exit status 2."""


def default_exercises_dir() -> Path:
    """./exercises when the current folder has one, else the exercises/ folder next to the package."""
    here = Path.cwd() / "exercises"
    if here.is_dir():
        return here
    return Path(minidiff.__file__).resolve().parent.parent / "exercises"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m minidiff grade",
        description="Grade the exercises in exercises/ (each in its own process), or check the graders.")
    p.add_argument("--only", action="append", default=[], metavar="EXNN",
                   help="grade only these exercises: ex03, 3, ex03_q_sample or q_sample; repeat or comma-separate")
    p.add_argument("--json", metavar="PATH", help="also write the report as JSON to PATH")
    p.add_argument("--check", action="store_true",
                   help="check the graders: the reference passes every test (twice), the untouched stubs fail "
                        "every test, and every known-wrong variant is caught")
    p.add_argument("--target", default="student", metavar="TARGET",
                   help="what to grade: student (the files in --exercises-dir, the default), reference "
                        "(minidiff itself) or variant:NAME (a known-wrong version; see --list)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                   help=f"wall-clock limit per exercise (default {DEFAULT_TIMEOUT_S:g})")
    p.add_argument("--exercises-dir", metavar="PATH",
                   help="folder holding the exNN_<topic>/ folders (default: ./exercises, else the repository's)")
    p.add_argument("--jobs", type=int, default=DEFAULT_JOBS, metavar="N",
                   help=f"grading processes run at once (default {DEFAULT_JOBS})")
    p.add_argument("--list", action="store_true", help="list the exercises and their known-wrong variants")
    return p


def _validate(args: argparse.Namespace) -> tuple[list, Path]:
    exercises = registry.select(args.only)  # ValueError names the unknown exercise and the valid ones
    if args.timeout <= 0:
        raise UsageError(f"--timeout {args.timeout:g} is not allowed; give a number of seconds > 0")
    if args.jobs < 1:
        raise UsageError(f"--jobs {args.jobs} is not allowed; give a number >= 1")
    folder = Path(args.exercises_dir) if args.exercises_dir else default_exercises_dir()
    needs_folder = args.check or args.target == "student"
    if needs_folder and not folder.is_dir():
        raise UsageError(f"--exercises-dir {folder} is not a folder; point it at the folder holding ex01_.../ etc.")
    target = args.target
    if target.startswith("variant:"):
        name = target.split(":", 1)[1]
        exercises = [e for e in exercises if name in {v.name for v in e.variants}]
        if not exercises:
            known = sorted({v.name for e in registry.select(args.only) for v in e.variants})
            raise UsageError(f"--target {target}: no selected exercise has a variant {name!r}; "
                             f"known variants: {', '.join(known)}")
    elif target not in ("student", "reference"):
        raise UsageError(f"--target {target!r} is not known; choose one of {', '.join(TARGETS)}")
    return exercises, folder


def _list(exercises: list) -> str:
    lines = []
    for e in exercises:
        lines.append(f"{e.id} {e.title}: {e.name}/{e.filename}, {e.function}({', '.join(e.params)}), "
                     f"{e.max_points} points, taught in {e.notebook}")
        lines.append(f"    variants: {', '.join(v.name for v in e.variants)}")
    return "\n".join(lines)


def _write_json(path: str, report: dict) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, target)


def main(argv: Optional[list[str]] = None) -> int:
    """Run ``grade`` with command-line arguments ``argv``; return the exit status."""
    try:
        args = parser().parse_args(argv)
    except SystemExit as exit_:  # argparse has printed usage and the problem (or --help)
        return int(exit_.code or 0)
    try:
        exercises, folder = _validate(args)
    except (ValueError, UsageError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.list:
        print(_list(exercises))
        return 0
    if args.check:
        ok, text, report = run_check(exercises, str(folder), args.timeout, args.jobs)
        print(text)
        if args.json:
            _write_json(args.json, report)
        return 0 if ok else 1
    jobs = [Job(e.id, args.target, str(folder), args.timeout) for e in exercises]
    results = run_jobs(jobs, args.jobs)
    report = grade_report([exercise_report(e, r) for e, r in zip(exercises, results)], args.target,
                          str(folder.resolve()))
    details = render_details(report)
    print((details + "\n\n" if details else "") + render_table(report))
    if args.json:
        _write_json(args.json, report)
        print(f"\nreport written to {args.json}")
    return 0 if all(e["status"] == "passed" for e in report["exercises"]) else 1
