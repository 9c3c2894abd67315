"""The parent's side of grading: draw inputs, run a submission in its child, judge what came back.

The expected answers are computed here, after the child is gone, from the same inputs the child
was sent; the child's record is read as data (plain tensors, strings), never called or trusted.
Statuses of an exercise, in order of precedence: "flagged" (it used what it should write; 0
points), "missing", "error" (the file does not load), "timed out", "crashed", "not started",
"passed", "failed". Cases that passed before a time-out or crash keep their points.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from minidiff.grading.compare import describe_call, generic_hint, problem, same, wrong_samples
from minidiff.grading.runner import Outcome, run_all
from minidiff.grading.sandbox import FORBIDDEN_MARK, finish, materialise, run_case
from minidiff.grading.spec import Case, Exercise, Inputs

OUTPUT_LINES = 5  # lines of a crashed child's output quoted in its message
SEED_STRIDE = 1_000_003  # a prime: exercise k of a run with seed s draws from seed s * SEED_STRIDE + k


def draw_inputs(exercise: Exercise, seed: int) -> list[Inputs]:
    """The inputs of every case of ``exercise`` in the grading run with ``seed``."""
    g = torch.Generator().manual_seed(seed * SEED_STRIDE + int(exercise.id[2:]))
    return [case.make(g) for case in exercise.cases]


def call_reference(fn: Callable[..., Any], exercise: Exercise, inputs: Inputs) -> Any:
    """``fn`` on fresh copies of ``inputs`` (models built anew), in the stub's argument order."""
    args = materialise(inputs)
    return finish(fn(*[args[p] for p in exercise.params]), args)


def pick(value: Any, output: int | None) -> Any:
    """Element ``output`` of a returned tuple (ex11, ex14), or ``value`` when the case takes it whole."""
    if output is None:
        return value
    return value[output] if type(value) is tuple and len(value) > output else None


def _picked(record_value: Any, output: int | None) -> tuple[Any, str]:
    """(element ``output`` of the child's record of a returned tuple, "") or (None, what came instead)."""
    if output is None:
        return record_value, ""
    items = record_value.get("items") if isinstance(record_value, dict) else None
    if isinstance(items, list) and len(items) > output:
        return items[output], ""
    kind = str(record_value.get("type", "object"))[:40] if isinstance(record_value, dict) else "object"
    count = f" of {len(items)}" if isinstance(items, list) else ""
    return None, f"returned a {kind}{count}; expected a tuple whose element {output} this case compares"


def _returned(value: Any) -> Any:
    """The child's output: a plain tensor, or a stand-in named after whatever type it returned instead."""
    tensor = value.get("tensor") if isinstance(value, dict) else None
    plain = type(tensor) is Tensor and tensor.layout == torch.strided
    if plain and not (tensor.is_complex() or tensor.is_quantized):
        return tensor
    name = "unusual_Tensor" if type(tensor) is Tensor else "object"
    name = str(value.get("type", name) if isinstance(value, dict) and tensor is None else name)[:40]
    return None if name == "NoneType" else type(name if name.isidentifier() else "object", (), {})()


def _mistakes(exercise: Exercise, inputs: Inputs, got: Any, expected: Tensor, case: Case) -> str:
    """The hint of a known mistake whose output equals ``got``; for scalars, what every mistake gives."""
    outputs = []
    for variant in exercise.variants:
        try:
            wrong = pick(call_reference(variant.fn, exercise, inputs), case.output)
        except Exception:
            continue
        if same(wrong, expected, case.tol):
            continue
        if variant.hint and same(got, wrong, case.tol) and got.dtype == wrong.dtype:
            return f"hint: {variant.hint}"
        if type(wrong) is Tensor and wrong.ndim == 0:
            outputs.append(f"{variant.name} {wrong.item():.6g}")
    return f"known mistakes would return: {', '.join(outputs)}" if outputs and expected.ndim == 0 else ""


def _sample_hint(exercise: Exercise, inputs: Inputs, got: Any, expected: Tensor, case: Case) -> str:
    wrong, right = wrong_samples(got, expected, inputs.get("t"), case.tol)
    if not wrong or not right:
        return ""
    t = inputs["t"].tolist()
    text = (f"wrong for samples {wrong} (t = {[t[i] for i in wrong]}), right for samples {right} "
            f"(t = {[t[i] for i in right]})")
    if exercise.t0_hint and all(t[i] == 0 for i in wrong):
        text += f"\n  hint: {exercise.t0_hint}"
    return text


def judge_case(exercise: Exercise, case: Case, inputs: Inputs, record: Any) -> tuple[str, str]:
    """(status, message) of one case from the child's record of it."""
    call = describe_call(exercise.function, inputs)
    status = record.get("status") if isinstance(record, dict) else None
    if status == "not started":
        return "not started", str(record.get("message", ""))
    if status == "raised":
        text = str(record.get("message", ""))
        if FORBIDDEN_MARK in text:
            return "flagged", text.split(FORBIDDEN_MARK, 1)[1].split(" (line")[0].strip()
        hints = [h for pattern, h in exercise.error_hints if re.search(pattern, text)]
        return "failed", f"{call} raised {text}" + (f"\n  hint: {hints[0]}" if hints else "")
    if status != "returned":
        return "failed", f"{call}: the grading process sent back a record it should not have: written over?"
    if case.check is not None:
        message = case.check(inputs, record)
        return ("passed", "") if message is None else ("failed", f"{call}: {message}")
    value, not_a_tuple = _picked(record.get("value"), case.output)
    if not_a_tuple:
        return "failed", f"{call}: {not_a_tuple}"
    got = _returned(value)
    reference = case.expected or (lambda given: pick(call_reference(exercise.reference, exercise, given),
                                                     case.output))
    expected = reference(inputs)
    found = problem(got, expected, case.tol, case.dtypes)
    if found is None:
        return "passed", ""
    check, text = found
    extra = [_sample_hint(exercise, inputs, got, expected, case)] if check in ("values", "finite") else []
    hint = _mistakes(exercise, inputs, got, expected, case) if check != "type" else ""
    generic = generic_hint(check, got, expected)
    extra += [hint or (f"hint: {generic}" if generic else "")]
    return "failed", "\n  ".join([f"{call}: {text}"] + [e for e in extra if e])


def _ended(outcome: Outcome) -> str:
    lines = [line for line in outcome.output.splitlines() if line.strip()][-OUTPUT_LINES:]
    return f"the grading process {outcome.ended}" + ("; its last output:\n    " + "\n    ".join(lines)
                                                        if lines else "")


def evaluate(exercise: Exercise, inputs: list[Inputs], results: dict | None, outcome: Outcome | None,
             target: str) -> dict[str, Any]:
    """The report of one exercise (an entry of the JSON report's "exercises") from what its child sent."""
    load = (results or {}).get("load") if isinstance(results, dict) else None
    records = (results or {}).get("cases", []) if isinstance(results, dict) else []
    abnormal = "timed out" if outcome and outcome.ended.startswith("timed out") else "crashed"
    message, notes = "", list(outcome.problems) if outcome else []
    tests, flags = [], []
    for i, (case, case_inputs) in enumerate(zip(exercise.cases, inputs)):
        if i < len(records):
            try:
                status, text = judge_case(exercise, case, case_inputs, records[i])
            except Exception as error:  # noqa: BLE001 - a record built to trip the judge
                status, text = "failed", f"the child sent back a record that cannot be judged ({error!r})"
        elif i == len(records) and isinstance(load, dict) and load.get("status") == "ok":
            status, text = abnormal, _ended(outcome) if outcome else "no result"
        else:
            status, text = "not run", ""
        if status == "flagged":
            flags.append(text)
        tests.append(dict(name=case.name, status=status, points=case.points if status == "passed" else 0,
                          max_points=case.points, message=text))
    if not isinstance(load, dict):
        status, message = abnormal, (_ended(outcome) if outcome else "no result") + " while loading the file"
    elif load.get("status") != "ok":
        status, message = "error", f"loading the file: {load.get('message', '')}"
    elif any(t["status"] in ("timed out", "crashed") for t in tests):
        status = abnormal
    elif all(t["status"] == "not started" for t in tests):
        status, message = "not started", tests[0]["message"]
    else:
        status = "passed" if all(t["status"] == "passed" for t in tests) else "failed"
    params = tuple(load.get("params", ())) if isinstance(load, dict) else exercise.params
    if params != exercise.params:
        notes.append(f"signature ({', '.join(map(str, params))}) differs from the stub's "
                     f"({', '.join(exercise.params)})")
    if flags:
        status, message = "flagged", "0 points: the code uses what it should write: " + "; ".join(set(flags))
    return dict(id=exercise.id, name=exercise.name, title=exercise.title, function=exercise.function,
                target=target, status=status, points=0 if flags else sum(t["points"] for t in tests),
                max_points=exercise.max_points, seconds=round(outcome.seconds, 3) if outcome else 0.0,
                message=message, flags=sorted(set(flags)), notes=notes, tests=tests)


def grade_trusted(exercise: Exercise, fn: Callable[..., Any], seed: int, target: str) -> dict[str, Any]:
    """Grade the reference or a known-wrong variant: trusted code, run here, judged the same way."""
    inputs = draw_inputs(exercise, seed)
    records = [run_case(fn, list(exercise.params), case, source="") for case in inputs]
    results = dict(load=dict(status="ok", params=list(exercise.params)), cases=records)
    return evaluate(exercise, inputs, results, None, target)


def missing(exercise: Exercise, path: Path, target: str) -> dict[str, Any]:
    """The report of an exercise whose file is not there."""
    tests = [dict(name=c.name, status="not run", points=0, max_points=c.points, message="")
             for c in exercise.cases]
    return dict(id=exercise.id, name=exercise.name, title=exercise.title, function=exercise.function,
                target=target, status="missing", points=0, max_points=exercise.max_points, seconds=0.0,
                message=f"{path} not found (copy it from the handed-out exercises/ folder)", flags=[],
                notes=[], tests=tests)


def grade_submissions(submissions: list[tuple[Exercise, Path]], seed: int, timeout: float, parallel: int,
                      mode: str, target: str = "student") -> list[dict[str, Any]]:
    """Grade each (exercise, file) in its own child; a report per submission, in the order given."""
    present = [(e, p) for e, p in submissions if p.is_file()]
    tasks = []
    for exercise, path in present:
        job = dict(function=exercise.function, params=list(exercise.params), filename=exercise.filename,
                   forbidden=list(exercise.forbidden))
        tasks.append((job, draw_inputs(exercise, seed), path))
    outcomes = iter(run_all([(job, inputs, path) for job, inputs, path in tasks], timeout, parallel, mode))
    reports, task_inputs = [], iter(t[1] for t in tasks)
    for exercise, path in submissions:
        if not path.is_file():
            reports.append(missing(exercise, path, target))
            continue
        outcome = next(outcomes)
        reports.append(evaluate(exercise, next(task_inputs), outcome.results, outcome, target))
    return reports
