"""Comparing a returned value with the expected one, and saying what differs in plain words.

Checks run in a fixed order and stop at the first problem: type, shape, dtype, finiteness, values.
Every message is one line that a student can act on, e.g.
``returned shape (4, 3, 8); expected (4, 3, 8, 8)`` or
``1536 of 3072 elements differ, max |diff| 0.41 at (0, 2, 5, 1)``.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

SHOW_VALUES_UP_TO = 8  # tensors with at most this many elements are printed in full in a call
FLOAT32_EPS_HINT = 1e-5  # a float64 answer off by less than this was probably computed in float32


def fmt_number(x: float) -> str:
    """Two significant digits, no trailing noise: 0.41, 0.0015, 2.4e-09."""
    return f"{x:.2g}"


def fmt_shape(shape: torch.Size | tuple[int, ...]) -> str:
    """(4, 3, 8) as Python prints a tuple, with (5,) for one dimension and () for a scalar."""
    return str(tuple(shape))


def fmt_index(flat: int, shape: torch.Size) -> str:
    """The multi-index of a flat position, e.g. (0, 2, 5, 1)."""
    index = []
    for size in reversed(shape):
        index.append(flat % size)
        flat //= size
    return str(tuple(reversed(index)))


def describe(value: Any) -> str:
    """Short description of an argument: small tensors by value, larger ones by shape and dtype."""
    if isinstance(value, Tensor):
        dtype = str(value.dtype).replace("torch.", "")
        if value.numel() <= SHOW_VALUES_UP_TO and not value.is_floating_point():
            return str(value.tolist())
        if value.ndim == 0:
            return f"tensor({value.item():.4g}, {dtype})"
        return f"{fmt_shape(value.shape)} {dtype}"
    if isinstance(value, float):
        return f"{value:g}"
    if value is None or isinstance(value, (int, bool, str)):
        return repr(value)
    return getattr(value, "label", type(value).__name__)


def describe_call(function: str, inputs: dict[str, Any]) -> str:
    """``q_sample(x0=(4, 3, 8, 8) float32, t=[0, 10, 500, 999], ...)``."""
    args = ", ".join(f"{name}={describe(value)}" for name, value in inputs.items())
    return f"{function}({args})"


def type_name(value: Any) -> str:
    return "torch.Tensor" if isinstance(value, Tensor) else type(value).__name__


def problem(got: Any, expected: Tensor, atol: float, rtol: float) -> Optional[tuple[str, str]]:
    """The first way ``got`` differs from ``expected``, as (check, message); None when they agree.

    check is one of "type", "shape", "dtype", "finite", "values".
    """
    # 1. type
    if not isinstance(got, Tensor):
        returned = "None" if got is None else f"a {type_name(got)}"
        return "type", f"returned {returned}; expected a torch.Tensor"
    # 2. shape
    if got.shape != expected.shape:
        return "shape", f"returned shape {fmt_shape(got.shape)}; expected {fmt_shape(expected.shape)}"
    # 3. dtype
    if got.dtype != expected.dtype:
        return "dtype", f"returned dtype {got.dtype}; expected {expected.dtype}"
    got64, exp64 = got.detach().double().cpu(), expected.detach().double().cpu()
    # 4. finiteness: NaN or inf where the answer is finite
    bad = ~torch.isfinite(got64) & torch.isfinite(exp64)
    if bad.any() and got.ndim == 0:
        return "finite", f"returned {got64.item()}; expected {exp64.item():.6g}"
    if bad.any():
        first = fmt_index(int(bad.flatten().nonzero()[0]), got.shape)
        return "finite", f"{int(bad.sum())} of {got.numel()} elements are NaN or inf, first at {first}"
    # 5. values
    diff = (got64 - exp64).abs().nan_to_num(nan=float("inf"))
    wrong = diff > atol + rtol * exp64.abs()
    if not wrong.any():
        return None
    if got.ndim == 0:
        return "values", f"returned {got64.item() + 0.0:.6g}; expected {exp64.item() + 0.0:.6g}"
    worst = int(torch.where(wrong, diff, torch.zeros_like(diff)).flatten().argmax())
    at = fmt_index(worst, got.shape)
    returned, wanted = got64.flatten()[worst].item() + 0.0, exp64.flatten()[worst].item() + 0.0  # + 0.0: no "-0"
    return "values", (f"{int(wrong.sum())} of {got.numel()} elements differ, max |diff| "
                      f"{fmt_number(diff.flatten()[worst].item())} at {at} "
                      f"(returned {returned:.6g}, expected {wanted:.6g})")


def generic_hint(check: str, got: Any, expected: Tensor) -> str:
    """A hint that fits any exercise, for the kinds of problem that have an obvious cause."""
    if check == "type" and isinstance(got, (float, int)):
        return "return a tensor: a 0-dimensional one for a scalar (don't call .item())"
    if check == "type" and got is None:
        return "the function returns None: is a `return` missing?"
    if check == "dtype":
        return f"convert the result (or the float64 schedule values you mix in) with .to({expected.dtype})"
    if check == "values" and expected.dtype == torch.float64 and isinstance(got, Tensor):
        if (got.double() - expected.double()).abs().max().item() < FLOAT32_EPS_HINT:
            return "the values agree to float32 precision only: compute in float64 from the start"
    return ""


def same(got: Any, expected: Any, atol: float, rtol: float) -> bool:
    """True when a variant's output equals a student's (for matching mistakes to hints)."""
    return (isinstance(got, Tensor) and isinstance(expected, Tensor) and got.shape == expected.shape
            and bool(torch.allclose(got.detach().double(), expected.detach().double(), atol=atol, rtol=rtol,
                                    equal_nan=True)))
