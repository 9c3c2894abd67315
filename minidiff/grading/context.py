"""What a test sees: one way to call the implementation under test and one way to compare its answer.

``Context.call`` turns whatever the implementation does into something a student can read: a
NotImplementedError means "not started", any other exception becomes a one-line message naming the
call, the exception and the student's line, plus a hint when the error is a known mistake.
``Context.expect_close`` compares in the order of ``compare.problem`` and adds a hint when the
wrong answer equals the output of one of the exercise's known-wrong variants.
"""

from __future__ import annotations

import re
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

from minidiff.grading.compare import describe_call, generic_hint, problem, same
from minidiff.grading.spec import FLOAT32_TOL, Exercise, Failure, Inputs, NotStarted, Test

MAX_ERROR_CHARS = 300  # an exception message longer than this is cut, so one error cannot flood the table


class Context:
    """The implementation under test, wrapped for the tests of one exercise."""

    def __init__(self, exercise: Exercise, impl: Callable[..., Any], source: Optional[Path] = None,
                 on_call: Optional[Callable[[bool], None]] = None) -> None:
        self.exercise = exercise
        self.impl = impl
        self.source = source  # the student's file, to point at the failing line
        self.on_call = on_call  # told True before and False after each call into the implementation

    def describe(self, inputs: Inputs) -> str:
        return describe_call(self.exercise.function, inputs)

    def call(self, inputs: Inputs) -> Any:
        """Call the implementation with ``inputs`` (positionally, in the stub's order)."""
        args = [inputs[name] for name in self.exercise.params]
        call = self.describe(inputs)  # before the call: the implementation may change its inputs in place
        if self.on_call is not None:
            self.on_call(True)
        try:
            return self.impl(*args)
        except NotImplementedError as error:
            raise NotStarted(str(error)) from None
        except SystemExit as error:
            raise Failure(f"{call} called exit({error.code!r}); "
                          "a function must return its result, not end the program") from None
        except MemoryError:
            raise Failure(f"{call} ran out of memory (MemoryError)") from None
        except Exception as error:  # noqa: BLE001 - any student error becomes a message
            raise Failure(self._error_message(call, error)) from None
        finally:
            if self.on_call is not None:
                self.on_call(False)

    def _error_message(self, call: str, error: Exception) -> str:
        text = f"{type(error).__name__}: {error}".strip()
        first_line = text.splitlines()[0] if text else type(error).__name__
        if len(first_line) > MAX_ERROR_CHARS:
            first_line = first_line[:MAX_ERROR_CHARS] + " ..."
        message = f"{call} raised {first_line}{self._where(error)}"
        if "can't allocate memory" in text or "out of memory" in text.lower():
            message += " (ran out of memory)"
        for pattern, hint in self.exercise.error_hints:
            if re.search(pattern, text):
                return f"{message}\n  hint: {hint}"
        return message

    def _where(self, error: BaseException) -> str:
        """' (line 23 of q_sample.py: ab = alpha_bar[t])' for the deepest frame in the student's file."""
        if self.source is None:
            return ""
        frames = [f for f in traceback.extract_tb(error.__traceback__) if Path(f.filename) == self.source]
        if not frames:
            return ""
        frame = frames[-1]
        code = f": {frame.line.strip()}" if frame.line else ""
        return f" (line {frame.lineno} of {self.source.name}{code})"

    def expect_close(self, got: Any, expected: Any, inputs: Inputs, make_inputs: Optional[Callable[[], Inputs]] = None,
                     tol: tuple[float, float] = FLOAT32_TOL, what: Optional[str] = None) -> None:
        """Raise ``Failure`` unless ``got`` matches ``expected``.

        ``what`` names the compared value (default: the call); ``make_inputs`` rebuilds fresh inputs so
        the exercise's wrong variants can be run to find a hint.
        """
        found = problem(got, expected, *tol)
        if found is None:
            return
        check, text = found
        message = f"{what or self.describe(make_inputs() if make_inputs else inputs)}: {text}"
        hint = self._variant_hint(got, expected, make_inputs, tol) if check != "type" else ""
        hint = hint or generic_hint(check, got, expected)
        raise Failure(f"{message}\n  hint: {hint}" if hint else message)

    def _variant_hint(self, got: Any, expected: Any, make_inputs: Optional[Callable[[], Inputs]],
                      tol: tuple[float, float]) -> str:
        """The hint of the first known-wrong variant whose output equals ``got`` (dtype included).

        A variant that happens to give the right answer on these inputs explains nothing and is skipped.
        """
        if make_inputs is None:
            return ""
        for variant in self.exercise.variants:
            if not variant.hint:
                continue
            inputs = make_inputs()
            try:
                wrong = variant.fn(*[inputs[name] for name in self.exercise.params])
            except Exception:  # noqa: BLE001 - a variant that cannot run on these inputs explains nothing
                continue
            if same(wrong, expected, *tol) or not same(got, wrong, *tol):
                continue
            if got.dtype == wrong.dtype:
                return variant.hint
        return ""


def matches_reference(name: str, points: int, make_inputs: Callable[[], Inputs],
                      tol: tuple[float, float] = FLOAT32_TOL) -> Test:
    """The common test: on fresh ``make_inputs()``, the implementation returns what the reference does."""

    def run(ctx: Context) -> None:
        fresh, inputs = make_inputs(), make_inputs()
        expected = ctx.exercise.reference(*[fresh[p] for p in ctx.exercise.params])
        got = ctx.call(inputs)
        ctx.expect_close(got, expected, inputs, make_inputs, tol)

    return Test(name, points, run)
