"""What an exercise is: its stub's function, the reference, the tests, and the deliberately wrong variants.

An ``Exercise`` names the function a student writes in ``exercises/<id>_<topic>/<topic>.py``. Its
``reference`` is a thin adapter over minidiff's own functions with exactly the stub's signature. Each
``Test`` builds fresh, explicit inputs (seeded generators, never the global RNG) and raises
``Failure`` with a message when the implementation under test gets something wrong. Each
``Variant`` is a plausible mistake: ``--check`` proves every one is caught, and when a student's
output equals a variant's, its ``hint`` is shown.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

Inputs = dict[str, Any]
SCHEDULE_TOL = (1e-12, 1e-9)  # (atol, rtol) for float64 schedules: agreement to ~float64 round-off
FLOAT32_TOL = (1e-5, 1e-4)  # (atol, rtol) for float32 tensors: a few float32 ulps on unit-scale values


class Failure(Exception):
    """A test found a mistake; the message is shown to the student as is."""


class NotStarted(Exception):
    """The implementation raised NotImplementedError: the stub is untouched."""


@dataclass(frozen=True)
class Variant:
    """A deliberately wrong implementation with the stub's signature, and the hint it stands for."""

    name: str
    fn: Callable[..., Any]
    hint: str = ""


@dataclass(frozen=True)
class Test:
    """One graded check: ``run(ctx)`` returns on success and raises ``Failure`` otherwise."""

    name: str
    points: int
    run: Callable[[Any], None]


@dataclass(frozen=True)
class Exercise:
    """One exercise: the stub's function, its reference, its tests and the wrong variants it must catch."""

    id: str  # "ex03"
    topic: str  # "q_sample": the folder is ex03_q_sample/, the file q_sample.py
    title: str
    function: str  # the name the stub defines
    notebook: str  # where the idea is taught
    reference: Callable[..., Any]
    tests: tuple[Test, ...]
    variants: tuple[Variant, ...]
    error_hints: tuple[tuple[str, str], ...] = ()  # (regex on "Type: message" of an exception, hint)
    forbidden: tuple[str, ...] = ()  # names (beyond minidiff) a solution may not use, e.g. a fused torch kernel
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
        return sum(test.points for test in self.tests)

    def variant(self, name: str) -> Variant:
        for variant in self.variants:
            if variant.name == name:
                return variant
        raise KeyError(name)


def generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed``: every input a test builds comes from one of these."""
    return torch.Generator().manual_seed(seed)


def randn(*shape: int, seed: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Standard normal tensor of ``shape`` drawn from its own seeded generator."""
    return torch.randn(*shape, generator=generator(seed), dtype=dtype)


def unit_rows(*shape: int, seed: int) -> Tensor:
    """Random rows of unit L2 norm along the last dimension."""
    x = randn(*shape, seed=seed)
    return x / x.norm(dim=-1, keepdim=True)


def broadcast_like(values: Tensor, t: Tensor, like: Tensor) -> Tensor:
    """values[t] as (B, 1, ..., 1) in like's dtype: the broadcasting every wrong variant needs too."""
    return values[t].to(like.dtype).view(-1, *([1] * (like.ndim - 1)))  # (B, 1, ..., 1)


def noised(alpha_bar: Tensor, t: Tensor, x0: Tensor, noise: Tensor) -> Tensor:
    """sqrt(ab_t) x0 + sqrt(1 - ab_t) noise with plain indexing (t = -1 wraps): for building wrong variants."""
    ab = broadcast_like(alpha_bar, t, x0)  # (B, 1, ..., 1)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def log_inverse_temperature(temperature: float) -> float:
    """CLIP's logit_scale for a temperature: log(1 / temperature) (Radford et al. 2021, sec. 2.5)."""
    return math.log(1.0 / temperature)
