"""``python -m minidiff grade``: grade the exercises, check the graders, or list what there is.

Exit status: 0 when every graded case passed (or the check passed), 1 when some did not, 2 for bad
input (an unknown exercise or variant, a non-positive time limit, a missing folder), with a message
and no traceback.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from pathlib import Path

import minidiff
from minidiff.grading import registry
from minidiff.grading.check import run_check
from minidiff.grading.grade import grade_submissions, grade_trusted
from minidiff.grading.report import grade_report, render_details, render_table, write_json
from minidiff.grading.runner import isolation

DEFAULT_TIMEOUT_S = 20.0  # per exercise: importing torch takes ~2 s idle, ~7 s loaded; the cases < 1 s
DEFAULT_JOBS = 2  # children at once: the course machine has two cores
TARGETS = ("student", "reference", "variant:NAME")
SEED_BITS = 31  # a fresh seed per run, small enough to type back in with --seed


class UsageError(Exception):
    """Bad input: printed as ``error: ...`` with exit status 2."""


def default_exercises_dir() -> Path:
    """./exercises when the current folder has one, else the exercises/ folder next to the package."""
    here = Path.cwd() / "exercises"
    return here if here.is_dir() else Path(minidiff.__file__).resolve().parent.parent / "exercises"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m minidiff grade",
        description="Grade the exercises in exercises/ (each in an isolated process), or check the graders.")
    p.add_argument("--only", action="append", default=[], metavar="EXNN",
                   help="only these exercises: ex03, 3, ex03_q_sample or q_sample; repeat or comma-separate")
    p.add_argument("--json", metavar="PATH", help="also write the report as JSON to PATH (atomically)")
    p.add_argument("--check", action="store_true",
                   help="check the graders: the reference passes, the untouched stubs fail, every known-"
                        "wrong variant is caught, and the adversarial suite (tests/grading_cases/) scores as "
                        "declared")
    p.add_argument("--target", default="student", metavar="TARGET",
                   help="what to grade: student (the files in --exercises-dir, the default), reference "
                        "(minidiff itself) or variant:NAME (a known-wrong version; see --list)")
    p.add_argument("--seed", type=int, default=None, metavar="N",
                   help="draw the inputs from this seed (default: a fresh one, printed and in the report)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                   help=f"wall-clock limit per exercise (default {DEFAULT_TIMEOUT_S:g})")
    p.add_argument("--exercises-dir", metavar="PATH",
                   help="the folder of the exNN_<topic>/ folders (default: ./exercises, else the repo's)")
    p.add_argument("--jobs", type=int, default=DEFAULT_JOBS, metavar="N",
                   help=f"exercises graded at once (default {DEFAULT_JOBS})")
    p.add_argument("--isolation", choices=("auto", "process-group"), default="auto",
                   help="auto: PID namespaces where they can be had; process-group: never (for comparison)")
    p.add_argument("--list", action="store_true", help="list the exercises and their known-wrong variants")
    return p


def _validate(args: argparse.Namespace) -> tuple[list, Path]:
    exercises = registry.select(args.only)  # ValueError names the unknown exercise and the valid ones
    if args.timeout <= 0:
        raise UsageError(f"--timeout {args.timeout:g} is not allowed; give a number of seconds > 0")
    if args.jobs < 1:
        raise UsageError(f"--jobs {args.jobs} is not allowed; give a number >= 1")
    if args.seed is not None and not 0 <= args.seed < 2**63:
        raise UsageError(f"--seed {args.seed} is not allowed; give an integer from 0 to 2**63 - 1")
    folder = Path(args.exercises_dir) if args.exercises_dir else default_exercises_dir()
    if (args.check or args.target == "student") and not folder.is_dir():
        raise UsageError(f"--exercises-dir {folder} is not a folder; give the folder holding ex01_.../ etc.")
    if args.target.startswith("variant:"):
        name = args.target.split(":", 1)[1]
        exercises = [e for e in exercises if name in {v.name for v in e.variants}]
        if not exercises:
            known = sorted({v.name for e in registry.select(args.only) for v in e.variants})
            raise UsageError(f"--target {args.target}: no selected exercise has a variant {name!r}; "
                             f"known variants: {', '.join(known)}")
    elif args.target not in ("student", "reference"):
        raise UsageError(f"--target {args.target!r} is not known; choose one of {', '.join(TARGETS)}")
    return exercises, folder


def _list(exercises: list) -> str:
    lines = []
    for e in exercises:
        lines.append(f"{e.id} {e.title}: {e.name}/{e.filename}, {e.function}({', '.join(e.params)}), "
                     f"{e.max_points} points, taught in {e.notebook}")
        lines.append(f"    variants: {', '.join(v.name for v in e.variants)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
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
    seed = secrets.randbits(SEED_BITS) if args.seed is None else args.seed
    mode = isolation() if args.isolation == "auto" else ("process group", "asked for with --isolation")
    start = time.monotonic()
    if args.check:
        ok, text, report = run_check(exercises, folder, seed, args.timeout, args.jobs, mode[0])
        print(text)
        if args.json:
            write_json(args.json, report)
        return 0 if ok else 1
    if args.target == "student":
        files = [(e, folder / e.name / e.filename) for e in exercises]
        reports = grade_submissions(files, seed, args.timeout, args.jobs, mode[0])
    elif args.target == "reference":
        reports = [grade_trusted(e, e.reference, seed, "reference") for e in exercises]
    else:
        name = args.target.split(":", 1)[1]
        reports = [grade_trusted(e, next(v.fn for v in e.variants if v.name == name), seed, args.target)
                   for e in exercises]
    report = grade_report(reports, args.target, str(folder.resolve()), seed, mode, time.monotonic() - start)
    details = render_details(report)
    print((details + "\n\n" if details else "") + render_table(report))
    print(f"\nseed {seed} (rerun these inputs with --seed {seed}); isolation: {mode[0]} ({mode[1]}); "
          f"{report['seconds']:.1f} s")
    if args.json:
        write_json(args.json, report)
        print(f"report written to {args.json}")
    return 0 if all(e["status"] == "passed" for e in report["exercises"]) else 1
