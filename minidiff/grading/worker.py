"""The grading process: load one implementation of one exercise, run its tests, write what happened.

Runs in a child process of its own (see ``runner``), so whatever the student's code does (loop
forever, call exit(), crash the interpreter, allocate without end) costs that exercise only. Results
go to a JSON-lines file, one line as each test starts and one as it ends, so the parent knows which
test was running when a process had to be killed.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, TextIO

import torch

try:
    import resource
except ImportError:  # Windows: no resource limits, the wall-clock limit still holds
    resource = None

from minidiff.grading import registry
from minidiff.grading.context import Context
from minidiff.grading.guard import Recorder, scan
from minidiff.grading.references import REFERENCE_MODULES
from minidiff.grading.spec import Exercise, Failure, NotStarted, Test

MEMORY_LIMIT = 2 * 1024**3  # bytes of address space a grading process may add after start-up: far above any test
CPU_GRACE_S = 5  # CPU seconds beyond the wall-clock limit before the kernel stops a process nobody killed


@dataclass(frozen=True)
class Job:
    """Grade ``target`` ("student", "reference" or "variant:NAME") on one exercise."""

    exercise: str
    target: str
    exercises_dir: str
    timeout: float


class LoadError(Exception):
    """The implementation could not be loaded; ``status`` is "missing" or "error"."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


def student_path(exercise: Exercise, exercises_dir: str | Path) -> Path:
    """exercises/ex03_q_sample/q_sample.py under ``exercises_dir``."""
    return Path(exercises_dir).resolve() / exercise.name / exercise.filename


def _isolate(output_path: str, timeout: float) -> None:
    """Own process group, output to a file, one thread, and memory and CPU ceilings (where the OS has them)."""
    try:
        os.setsid()
    except (OSError, AttributeError):
        pass  # already a group leader, or no sessions (Windows)
    fd = os.open(output_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    torch.set_num_threads(1)
    if resource is None:
        return
    cpu_limit = int(timeout) + CPU_GRACE_S  # a safety net should the parent die: it normally kills at `timeout`
    try:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_limit, cpu_limit + 1))
        with open("/proc/self/statm") as statm:
            current = int(statm.read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (current + MEMORY_LIMIT, resource.RLIM_INFINITY))
    except (OSError, ValueError):
        pass  # no /proc (macOS) or a hard limit already lower: grade without a ceiling


def _load_student(exercise: Exercise, path: Path, recorder: Recorder) -> tuple[Callable[..., Any], list[str]]:
    """The student's function and the notes about it (static flags come from ``scan``)."""
    if not path.is_file():
        raise LoadError("missing", f"{path} not found (copy it from the handed-out exercises/ folder)")
    sys.path.insert(0, str(path.parent))  # a student may keep helpers next to the exercise
    sys.dont_write_bytecode = True  # leave no __pycache__ in the student's folder
    spec = importlib.util.spec_from_file_location(f"student_{exercise.id}", path)
    module = importlib.util.module_from_spec(spec)
    recorder.set_active(True)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as error:
        raise LoadError("error", f"{path.name} does not compile: line {error.lineno}: {error.msg}") from None
    except SystemExit as error:
        raise LoadError("error", f"importing {path.name} called exit({error.code!r})") from None
    except Exception as error:  # noqa: BLE001 - any import-time error becomes a message
        frames = [f for f in traceback.extract_tb(error.__traceback__) if Path(f.filename) == path]
        where = f" (line {frames[-1].lineno})" if frames else ""
        raise LoadError("error", f"importing {path.name} raised {type(error).__name__}: {error}{where}") from None
    finally:
        recorder.set_active(False)
    impl = getattr(module, exercise.function, None)
    if not callable(impl):
        raise LoadError("error", f"{path.name} defines no function {exercise.function}")
    notes = []
    params = tuple(inspect.signature(impl).parameters)
    if params != exercise.params:
        notes.append(f"signature ({', '.join(params)}) differs from the stub's ({', '.join(exercise.params)})")
    return impl, notes


def _run_test(test: Test, ctx: Context) -> tuple[str, str]:
    """(status, message) for one test."""
    try:
        test.run(ctx)
    except NotStarted as error:
        return "not started", str(error) or "the function still raises NotImplementedError"
    except Failure as error:
        return "failed", str(error)
    except SystemExit as error:
        return "failed", f"the code called exit({error.code!r}) while this test ran"
    except Exception as error:  # noqa: BLE001 - student code run by a custom test, outside ctx.call
        tail = traceback.format_exception_only(type(error), error)[-1].strip()
        return "failed", f"while checking: {tail}"
    return "passed", ""


def run_job(job: Job, records_path: str, output_path: str) -> None:
    """Entry point of a grading process: write the JSON-lines record of grading ``job``."""
    _isolate(output_path, job.timeout)
    exercise = registry.find(job.exercise)
    with open(records_path, "a", buffering=1) as out:
        _grade(job, exercise, out)


def _grade(job: Job, exercise: Exercise, out: TextIO) -> None:
    def emit(**record: Any) -> None:
        out.write(json.dumps(record) + "\n")
        out.flush()

    recorder: Optional[Recorder] = None
    source: Optional[Path] = None
    flags: list[str] = []
    notes: list[str] = []
    if job.target == "reference":
        impl = exercise.reference
    elif job.target.startswith("variant:"):
        impl = exercise.variant(job.target.split(":", 1)[1]).fn
    else:
        source = student_path(exercise, job.exercises_dir)
        recorder = Recorder(REFERENCE_MODULES)
        try:
            if source.is_file():
                flags = scan(source.read_text(encoding="utf-8", errors="replace"), exercise.forbidden)
            impl, notes = _load_student(exercise, source, recorder)
        except LoadError as error:
            emit(event="load", status=error.status, message=str(error), flags=flags, notes=[])
            return
    emit(event="load", status="ok", message="", flags=flags, notes=notes)
    ctx = Context(exercise, impl, source, on_call=recorder.set_active if recorder else None)
    for test in exercise.tests:
        emit(event="start", test=test.name)
        status, message = _run_test(test, ctx)
        emit(event="result", test=test.name, status=status, message=message)
    calls = sorted(recorder.calls) if recorder else []
    emit(event="done", flags=[f"calls {name}, from the reference solution" for name in calls])
