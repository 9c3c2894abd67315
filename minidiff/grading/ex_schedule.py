"""Exercises on the forward process: ex01 linear alpha_bar, ex02 cosine alpha_bar, ex03 q_sample."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from minidiff.grading import references as ref
from minidiff.grading.context import matches_reference
from minidiff.grading.spec import SCHEDULE_TOL, Exercise, Variant, broadcast_like, noised, randn

NOTEBOOK = "notebook 01 (forward noising)"
COSINE_S = 0.008  # Nichol & Dhariwal 2021, eq. 17 (the value minidiff.schedule uses)
MAX_BETA = 0.999  # Nichol & Dhariwal 2021: betas clipped here (as minidiff.schedule does)
BROADCAST_HINT = ("alpha_bar[t] has shape (B,): reshape it to (B, 1, ..., 1), e.g. "
                  "alpha_bar[t].view(-1, *[1] * (x0.ndim - 1)), so each sample gets its own value")
INDEX_HINT = "t runs from 0 to T - 1 and alpha_bar[t] is the value at step t: don't add or subtract 1"

# ex01 --------------------------------------------------------------------------------------------


def _linear_betas(T: int, beta_start: float, beta_end: float) -> Tensor:
    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)  # (T,)


EX01 = Exercise(
    id="ex01", topic="linear_schedule", title="linear schedule", function="alpha_bar_linear", notebook=NOTEBOOK,
    reference=ref.alpha_bar_linear,
    tests=(
        matches_reference("T = 1000, betas from 1e-4 to 0.02 (Ho et al. 2020)", 4,
                          lambda: dict(T=1000, beta_start=1e-4, beta_end=0.02), SCHEDULE_TOL),
        matches_reference("T = 10, betas from 0.1 to 0.5", 3,
                          lambda: dict(T=10, beta_start=0.1, beta_end=0.5), SCHEDULE_TOL),
        matches_reference("T = 1: a single step", 3,
                          lambda: dict(T=1, beta_start=0.3, beta_end=0.6), SCHEDULE_TOL),
    ),
    variants=(
        Variant("zeros", lambda T, beta_start=1e-4, beta_end=0.02: torch.zeros(T, dtype=torch.float64),
                "you return zeros"),
        Variant("returns_betas", _linear_betas,
                "you return the betas themselves: alpha_bar is the running product of alphas = 1 - betas"),
        Variant("no_cumprod", lambda T, beta_start=1e-4, beta_end=0.02: 1 - _linear_betas(T, beta_start, beta_end),
                "you return the alphas: alpha_bar is their cumulative product (torch.cumprod)"),
        Variant("off_by_one", lambda T, beta_start=1e-4, beta_end=0.02: torch.cat(
            [torch.ones(1, dtype=torch.float64), torch.cumprod(1 - _linear_betas(T, beta_start, beta_end), 0)[:-1]]),
            "alpha_bar[0] must already include step 0: alpha_bar[0] = 1 - betas[0], not 1"),
        Variant("cumsum", lambda T, beta_start=1e-4, beta_end=0.02: 1 - torch.cumsum(
            _linear_betas(T, beta_start, beta_end), 0),
            "alpha_bar is a product of alphas, not 1 minus a sum of betas"),
        Variant("float32", lambda T, beta_start=1e-4, beta_end=0.02: torch.cumprod(
            1 - torch.linspace(beta_start, beta_end, T), 0)),
    ),
    error_hints=(("linspace", "torch.linspace(beta_start, beta_end, T, dtype=torch.float64) gives the T betas"),),
)

# ex02 --------------------------------------------------------------------------------------------


def _f(T: int, s: float = COSINE_S) -> Tensor:
    """f(t) = cos^2(((t / T) + s) / (1 + s) * pi / 2) at t = 0..T, float64 (T+1,)."""
    u = torch.arange(T + 1, dtype=torch.float64) / T  # (T+1,)
    return torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2


def _cosine_from_f(f: Tensor, clip: bool = True) -> Tensor:
    betas = 1 - f[1:] / f[:-1]  # (T,)
    return torch.cumprod(1 - (betas.clamp(max=MAX_BETA) if clip else betas), 0)


EX02 = Exercise(
    id="ex02", topic="cosine_schedule", title="cosine schedule", function="alpha_bar_cosine", notebook=NOTEBOOK,
    reference=ref.alpha_bar_cosine,
    tests=(
        matches_reference("T = 1000", 4, lambda: dict(T=1000), SCHEDULE_TOL),
        matches_reference("T = 20", 3, lambda: dict(T=20), SCHEDULE_TOL),
        matches_reference("T = 10: the last beta is clipped at 0.999", 3, lambda: dict(T=10), SCHEDULE_TOL),
    ),
    variants=(
        Variant("zeros", lambda T: torch.zeros(T, dtype=torch.float64), "you return zeros"),
        Variant("returns_f", lambda T: _f(T)[:-1],
                "you return f(t) itself: alpha_bar_t = f(t + 1) / f(0), through betas clipped at 0.999"),
        Variant("off_by_one", lambda T: torch.cumprod(
            torch.cat([torch.ones(1, dtype=torch.float64), 1 - (1 - _f(T)[1:-1] / _f(T)[:-2]).clamp(max=MAX_BETA)]), 0),
            "alpha_bar[0] must already include one step of noise: alpha_bar_t = f(t + 1) / f(0), so "
            "alpha_bar[0] < 1"),
        Variant("no_clip", lambda T: _cosine_from_f(_f(T), clip=False),
                "clip every beta at 0.999 (Nichol & Dhariwal 2021): the last one would otherwise be 1"),
        Variant("no_offset", lambda T: _cosine_from_f(_f(T, s=0.0)),
                "use the offset s = 0.008 inside the cosine"),
        Variant("not_normalised", lambda T: _cosine_from_f(_f(T)) * _f(T)[0],
                "divide by f(0) so that the schedule starts from alpha_bar = 1 before step 0"),
        Variant("float32", lambda T: _cosine_from_f(_f(T)).float()),
    ),
)

# ex03 --------------------------------------------------------------------------------------------


def _images() -> dict:
    return dict(x0=randn(4, 3, 8, 8, seed=31), t=torch.tensor([0, 10, 500, 999]), noise=randn(4, 3, 8, 8, seed=32),
                alpha_bar=ref.alpha_bar_cosine(1000))


def _points() -> dict:
    return dict(x0=randn(2, 2, seed=33), t=torch.tensor([3, 700]), noise=randn(2, 2, seed=34),
                alpha_bar=ref.alpha_bar_cosine(1000))


def _same_t() -> dict:
    return dict(x0=randn(3, 1, 4, 4, seed=35), t=torch.tensor([250, 250, 250]), noise=randn(3, 1, 4, 4, seed=36),
                alpha_bar=ref.alpha_bar_linear(1000))


EX03 = Exercise(
    id="ex03", topic="q_sample", title="q_sample", function="q_sample", notebook=NOTEBOOK,
    reference=ref.q_sample,
    tests=(
        matches_reference("images (4, 3, 8, 8), t = [0, 10, 500, 999], cosine schedule", 4, _images),
        matches_reference("2-D points (2, 2), t = [3, 700]", 3, _points),
        matches_reference("one t for the whole batch, linear schedule", 3, _same_t),
    ),
    variants=(
        Variant("zeros", lambda x0, t, noise, alpha_bar: torch.zeros_like(x0), "you return zeros"),
        Variant("identity", lambda x0, t, noise, alpha_bar: x0, "you return x0 unchanged: mix in the noise"),
        Variant("off_by_one", lambda x0, t, noise, alpha_bar: noised(alpha_bar, t - 1, x0, noise), INDEX_HINT),
        Variant("no_sqrt", lambda x0, t, noise, alpha_bar: (lambda ab: ab * x0 + (1 - ab) * noise)(
            broadcast_like(alpha_bar, t, x0)),
            "take square roots: xt = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise (the variances add up to 1)"),
        Variant("swapped", lambda x0, t, noise, alpha_bar: noised(alpha_bar, t, noise, x0),
            "sqrt(alpha_bar_t) multiplies x0 and sqrt(1 - alpha_bar_t) the noise, not the other way round"),
        Variant("not_broadcast", lambda x0, t, noise, alpha_bar: (lambda ab: ab.sqrt() * x0 + (1 - ab).sqrt() * noise)(
            alpha_bar[t].to(x0.dtype)), BROADCAST_HINT),
        Variant("float64", lambda x0, t, noise, alpha_bar: noised(alpha_bar, t, x0.double(), noise.double()),
            "alpha_bar is float64: convert alpha_bar[t] to x0.dtype so that xt keeps x0's dtype"),
    ),
    error_hints=((r"must match the size of tensor", BROADCAST_HINT), (r"out of bounds", INDEX_HINT)),
)

EXERCISES = (EX01, EX02, EX03)
