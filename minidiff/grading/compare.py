"""Comparing a returned tensor with the expected one, and saying what differs in plain words.

Checks run in a fixed order and stop at the first problem: type, shape, dtype, finiteness, values.
Every message is one that a student can act on, e.g. ``returned shape (4, 3, 8); expected (4, 3, 8, 8)``
or ``3 of 768 elements differ by more than 1e-05 + 0.0001 * |expected|; the worst at (0, 2, 5, 1):
returned -2.381640911, expected 2.496031761``. Values are printed with enough digits to see the difference.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

SHOW_VALUES_UP_TO = 8  # tensors with at most this many elements are printed in full
DIGITS = 10  # significant digits of a compared value: float32 differences show at the 7th or 8th
FLOAT32_EPS = 1.2e-7  # torch.finfo(torch.float32).eps: relative round-off of float32


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
    """An argument as a student should see it: small tensors by value, larger ones summarised."""
    if isinstance(value, Tensor):
        dtype = str(value.dtype).replace("torch.", "")
        if value.numel() <= SHOW_VALUES_UP_TO:
            values = [round(v, 4) if isinstance(v, float) else v for v in value.flatten().tolist()]
            shown = values[0] if value.ndim == 0 else values
            return f"{shown}" if not value.is_floating_point() else f"{shown} {dtype}"
        if not value.is_floating_point():
            return f"{fmt_shape(value.shape)} {dtype} from {int(value.min())} to {int(value.max())}"
        x = value.double()
        return (f"{fmt_shape(value.shape)} {dtype} in [{x.min().item():.3g}, {x.max().item():.3g}], "
                f"mean {x.mean().item():.3g}")
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict) and "model" in value:
        return "model"
    if isinstance(value, dict) and "state" in value:  # ex14: the weights loaded, the arguments of forward
        args = ", ".join(describe(a) for a in value.get("args", ()))
        return f"<{len(value['state'])} weights; forward({args})>"
    return repr(value)


def describe_call(function: str, inputs: dict[str, Any]) -> str:
    """``q_sample(x0=(4, 3, 8, 8) float32 in [-2.9, 3.1], mean 0.01, t=[0, 10, 500, 999], ...)``."""
    return f"{function}({', '.join(f'{name}={describe(value)}' for name, value in inputs.items())})"


def _tolerance(atol: float, rtol: float) -> str:
    return f"{atol:g} + {rtol:g} * |expected|"


def problem(got: Any, expected: Tensor, tol: tuple[float, float], dtypes: tuple[torch.dtype, ...] = ()
            ) -> tuple[str, str] | None:
    """The first way ``got`` differs from ``expected``, as (check, message); None when they agree.

    check is one of "type", "shape", "dtype", "finite", "values". ``dtypes`` are further dtypes that
    are right too (a float64 loss where float32 is expected); values are then compared in float64.
    """
    atol, rtol = tol
    # 1. type
    if type(got) is not Tensor:
        returned = "None" if got is None else "a " + type(got).__name__
        return "type", f"returned {returned}; expected a torch.Tensor"
    # 2. shape
    if got.shape != expected.shape:
        return "shape", f"returned shape {fmt_shape(got.shape)}; expected {fmt_shape(expected.shape)}"
    # 3. dtype
    if got.dtype != expected.dtype and got.dtype not in dtypes:
        allowed = " or ".join(str(d) for d in (expected.dtype,) + dtypes)
        return "dtype", f"returned dtype {got.dtype}; expected {allowed}"
    got64, exp64 = got.detach().double(), expected.detach().double()
    # 4. finiteness: NaN or inf where the answer is finite
    bad = ~torch.isfinite(got64) & torch.isfinite(exp64)
    if bad.any():
        first = fmt_index(int(bad.flatten().nonzero()[0]), got.shape)
        return "finite", f"{int(bad.sum())} of {got.numel()} elements are NaN or inf, first at {first}"
    # 5. values
    diff = (got64 - exp64).abs().nan_to_num(nan=float("inf"))
    wrong = diff > atol + rtol * exp64.abs()
    if not wrong.any():
        return None
    worst = int(torch.where(wrong, diff, torch.zeros_like(diff)).flatten().argmax())
    returned, wanted = got64.flatten()[worst].item() + 0.0, exp64.flatten()[worst].item() + 0.0  # no "-0"
    values = f"returned {returned:.{DIGITS}g}, expected {wanted:.{DIGITS}g}"
    if got.ndim == 0:
        return "values", f"{values} (|diff| {diff.item():.2g}, more than {_tolerance(atol, rtol)})"
    return "values", (f"{int(wrong.sum())} of {got.numel()} elements differ by more than "
                      f"{_tolerance(atol, rtol)}; the worst, |diff| {diff.flatten()[worst].item():.2g} at "
                      f"{fmt_index(worst, got.shape)}: {values}")


def precision_hint(got: Tensor, expected: Tensor) -> str:
    """Says so when a float64 answer is wrong only at float32's round-off."""
    if expected.dtype != torch.float64 or type(got) is not Tensor or got.shape != expected.shape:
        return ""
    relative = ((got.double() - expected).abs() / expected.abs().clamp(min=1e-30)).max().item()
    if relative < 50 * FLOAT32_EPS:
        return (f"the values agree only to float32 precision (relative error up to {relative:.1g}): "
                "compute in float64 from the start")
    return ""


def wrong_samples(got: Tensor, expected: Tensor, t: Any, tol: tuple[float, float]
                  ) -> tuple[list[int], list[int]]:
    """(samples that are wrong, samples that are right) of a batch, when ``t`` gives each sample a step."""
    if type(got) is not Tensor or got.shape != expected.shape or got.ndim == 0 or type(t) is not Tensor:
        return [], []
    if t.ndim != 1 or len(t) != got.shape[0] or len(t) < 2:
        return [], []
    diff = (got.double() - expected.double()).abs().nan_to_num(nan=float("inf"))
    wrong = (diff > tol[0] + tol[1] * expected.double().abs()).flatten(1).any(1)  # (B,)
    return [i for i in range(len(t)) if wrong[i]], [i for i in range(len(t)) if not wrong[i]]


def generic_hint(check: str, got: Any, expected: Tensor) -> str:
    """A hint that fits any exercise, for the kinds of problem that have an obvious cause."""
    if check == "type" and got is None:
        return "the function returns None: is a `return` missing?"
    if check == "type":
        return "return a torch.Tensor: a 0-dimensional one for a scalar (don't call .item())"
    if check == "dtype":
        return f"convert the result (or the float64 schedule values you mix in) with .to({expected.dtype})"
    if check == "values":
        return precision_hint(got, expected)
    return ""


def same(a: Any, b: Any, tol: tuple[float, float]) -> bool:
    """True when two outputs agree (for matching a student's output to a known mistake)."""
    return (type(a) is Tensor and type(b) is Tensor and a.shape == b.shape
            and bool(torch.allclose(a.detach().double(), b.detach().double(), atol=tol[0], rtol=tol[1],
                                    equal_nan=True)))
