"""What an exercise is: the stub's function, its reference, cases with fresh inputs, known-wrong variants.

A ``Case`` draws its inputs from a generator seeded by the grading run (the seed is in the report),
so no table of answers to fixed inputs helps and a teacher can rerun a grading exactly. By default
a case compares the student's output with the reference's on those inputs; a case with ``check``
looks at the child's whole record instead (what a model was called with, the gradients).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

Inputs = dict[str, Any]
SCHEDULE_TOL = (1e-12, 1e-9)  # (atol, rtol) for float64 schedules: agreement to ~float64 round-off
FLOAT32_TOL = (1e-5, 1e-4)  # (atol, rtol) for float32 tensors: a few float32 ulps on unit-scale values
T_STEPS = 1000  # the number of diffusion steps of every schedule an exercise is given (Ho et al. 2020)


@dataclass(frozen=True)
class Variant:
    """A deliberately wrong implementation with the stub's signature, and the hint it stands for."""

    name: str
    fn: Callable[..., Any]
    hint: str = ""


@dataclass(frozen=True)
class Case:
    """One graded check: inputs drawn by ``make(generator)``; the output compared with the reference's.

    ``dtypes``: output dtypes that are right besides the reference's. ``expected(inputs)``, when
    given, is the answer instead of the reference's (a closed form). ``check(inputs, record)``
    replaces the comparison and returns a failure message, or None when the record is right.
    ``output``: the element of a returned tuple that this case compares (ex11's (z, kl)).
    """

    name: str
    points: int
    make: Callable[[torch.Generator], Inputs]
    tol: tuple[float, float] = FLOAT32_TOL
    dtypes: tuple[torch.dtype, ...] = ()
    expected: Callable[[Inputs], Tensor] | None = None
    check: Callable[[Inputs, dict], str | None] | None = None
    output: int | None = None


@dataclass(frozen=True)
class Exercise:
    """One exercise: the stub's function, its reference, its cases and the wrong variants they must catch."""

    id: str  # "ex03"
    topic: str  # "q_sample": the folder is ex03_q_sample/, the file q_sample.py
    title: str
    function: str  # the name the stub defines
    notebook: str  # where the idea is taught
    reference: Callable[..., Any]
    cases: tuple[Case, ...]
    variants: tuple[Variant, ...]
    error_hints: tuple[tuple[str, str], ...] = ()  # (regex on "Type: message" of an exception, hint)
    forbidden: tuple[str, ...] = ()  # torch objects (dotted) a solution may not use, e.g. a fused kernel
    t0_hint: str = ""  # shown when only the samples at t = 0 of a batch are wrong
    params: tuple[str, ...] = field(default=(), init=False)  # the stub's parameters, from the reference

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", tuple(inspect.signature(self.reference).parameters))

    @property
    def name(self) -> str:
        return f"{self.id}_{self.topic}"

    @property
    def filename(self) -> str:
        return f"{self.topic}.py"

    @property
    def max_points(self) -> int:
        return sum(case.points for case in self.cases)


def randn(g: torch.Generator, *shape: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Standard normal tensor of ``shape`` drawn from ``g``."""
    return torch.randn(*shape, generator=g, dtype=dtype)


def randint(g: torch.Generator, low: int, high: int, n: int = 1) -> list[int]:
    """``n`` integers in [low, high) drawn from ``g``."""
    return torch.randint(low, high, (n,), generator=g).tolist()


def uniform(g: torch.Generator, low: float, high: float) -> float:
    """One float in [low, high) drawn from ``g``."""
    return low + (high - low) * torch.rand((), generator=g, dtype=torch.float64).item()


def unit_rows(g: torch.Generator, *shape: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Random rows of unit L2 norm along the last dimension."""
    x = randn(g, *shape, dtype=dtype)
    return x / x.norm(dim=-1, keepdim=True)


def broadcast_like(values: Tensor, t: Tensor, like: Tensor) -> Tensor:
    """values[t] as (B, 1, ..., 1) in like's dtype: the broadcasting every wrong variant needs too."""
    return values[t].to(like.dtype).view(-1, *([1] * (like.ndim - 1)))  # (B, 1, ..., 1)


def noised(alpha_bar: Tensor, t: Tensor, x0: Tensor, noise: Tensor) -> Tensor:
    """sqrt(ab_t) x0 + sqrt(1 - ab_t) noise, plain indexing (t = -1 wraps): for building wrong variants."""
    ab = broadcast_like(alpha_bar, t, x0)  # (B, 1, ..., 1)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise
