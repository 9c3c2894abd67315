"""Exercises on the forward process: ex01 linear alpha_bar, ex02 cosine alpha_bar, ex03 q_sample."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from minidiff.grading import references as ref
from minidiff.grading.spec import (
    SCHEDULE_TOL,
    T_STEPS,
    Case,
    Exercise,
    Variant,
    broadcast_like,
    noised,
    randint,
    randn,
)

NOTEBOOK = "notebook 01 (forward noising)"
COSINE_S = 0.008  # Nichol & Dhariwal 2021, eq. 17 (the value minidiff.schedule uses)
MAX_BETA = 0.999  # Nichol & Dhariwal 2021: betas clipped here (as minidiff.schedule does)
BETA_START, BETA_END = 1e-4, 0.02  # Ho et al. 2020, sec. 4, for T = 1000 (minidiff.schedule)
BROADCAST_HINT = ("alpha_bar[t] has shape (B,): reshape it to (B, 1, ..., 1), e.g. "
                  "alpha_bar[t].view(-1, *[1] * (x0.ndim - 1)), so each sample gets its own value")
INDEX_HINT = "t runs from 0 to T - 1 and alpha_bar[t] is the value at step t: don't add or subtract 1"

# ex01 --------------------------------------------------------------------------------------------


def _linear_betas(T: int, rescale: bool = True, clip: bool = True) -> Tensor:
    scale = 1000 / T if rescale else 1.0
    betas = torch.linspace(BETA_START * scale, BETA_END * scale, T, dtype=torch.float64)  # (T,)
    return betas.clamp(max=MAX_BETA) if clip else betas


EX01 = Exercise(
    id="ex01", topic="linear_schedule", title="linear schedule", function="alpha_bar_linear",
    notebook=NOTEBOOK,
    reference=ref.alpha_bar_linear,
    cases=(
        Case("T between 900 and 1100 (Ho et al. 2020 use T = 1000)", 3,
             lambda g: dict(T=randint(g, 900, 1101)[0]), SCHEDULE_TOL),
        Case("T between 100 and 899: betas rescaled by 1000 / T", 3,
             lambda g: dict(T=randint(g, 100, 900)[0]), SCHEDULE_TOL),
        Case("T between 2 and 20: the largest betas are clipped at 0.999", 3,
             lambda g: dict(T=randint(g, 2, 21)[0]), SCHEDULE_TOL),
        Case("T = 1: a single step", 1, lambda g: dict(T=1), SCHEDULE_TOL),
    ),
    variants=(
        Variant("zeros", lambda T: torch.zeros(T, dtype=torch.float64), "you return zeros"),
        Variant("returns_betas", _linear_betas,
                "you return the betas themselves: alpha_bar is the running product of alphas = 1 - betas"),
        Variant("no_cumprod", lambda T: 1 - _linear_betas(T),
                "you return the alphas: alpha_bar is their cumulative product (torch.cumprod)"),
        Variant("off_by_one", lambda T: torch.cat([torch.ones(1, dtype=torch.float64),
                                                   torch.cumprod(1 - _linear_betas(T), 0)[:-1]]),
                "alpha_bar[0] must already include step 0: alpha_bar[0] = 1 - betas[0], not 1"),
        Variant("cumsum", lambda T: 1 - torch.cumsum(_linear_betas(T), 0),
                "alpha_bar is a product of alphas, not 1 minus a sum of betas"),
        Variant("no_rescale", lambda T: torch.cumprod(1 - _linear_betas(T, rescale=False), 0),
                "scale both ends by 1000 / T (minidiff's linear schedule): any T then noises as much as "
                "T = 1000"),
        Variant("no_clip", lambda T: torch.cumprod(1 - _linear_betas(T, clip=False), 0),
                "clip the betas at 0.999: with few steps, 0.02 * 1000 / T reaches 1 and beyond"),
        Variant("float32", lambda T: torch.cumprod(1 - _linear_betas(T).float(), 0)),
    ),
    error_hints=(("linspace", "torch.linspace(start, end, T, dtype=torch.float64) gives the T betas"),),
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
    id="ex02", topic="cosine_schedule", title="cosine schedule", function="alpha_bar_cosine",
    notebook=NOTEBOOK,
    reference=ref.alpha_bar_cosine,
    cases=(
        Case("T between 900 and 1100", 3, lambda g: dict(T=randint(g, 900, 1101)[0]), SCHEDULE_TOL),
        Case("T between 20 and 899", 3, lambda g: dict(T=randint(g, 20, 900)[0]), SCHEDULE_TOL),
        Case("T between 2 and 19: the last beta is clipped at 0.999 (as for every T)", 3,
             lambda g: dict(T=randint(g, 2, 20)[0]), SCHEDULE_TOL),
        Case("T = 1: a single, clipped step", 1, lambda g: dict(T=1), SCHEDULE_TOL),
    ),
    variants=(
        Variant("zeros", lambda T: torch.zeros(T, dtype=torch.float64), "you return zeros"),
        Variant("returns_f", lambda T: _f(T)[:-1],
                "you return f(t) itself: alpha_bar_t = f(t + 1) / f(0), through betas clipped at 0.999"),
        Variant("off_by_one", lambda T: torch.cumprod(
            torch.cat([torch.ones(1, dtype=torch.float64),
                       1 - (1 - _f(T)[1:-1] / _f(T)[:-2]).clamp(max=MAX_BETA)]), 0),
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


def _q_inputs(g: torch.Generator, shape: tuple[int, ...], t: list[int], schedule: str,
              dtype: torch.dtype = torch.float32) -> dict:
    alpha_bar = ref.alpha_bar_cosine(T_STEPS) if schedule == "cosine" else ref.alpha_bar_linear(T_STEPS)
    return dict(x0=randn(g, *shape, dtype=dtype), t=torch.tensor(t), noise=randn(g, *shape, dtype=dtype),
                alpha_bar=alpha_bar)


def _no_noise_at_t0(x0: Tensor, t: Tensor, noise: Tensor, alpha_bar: Tensor) -> Tensor:
    clean = (t == 0).view(-1, *([1] * (x0.ndim - 1)))  # (B, 1, ..., 1)
    return torch.where(clean, x0, noised(alpha_bar, t, x0, noise))


EX03 = Exercise(
    id="ex03", topic="q_sample", title="q_sample", function="q_sample", notebook=NOTEBOOK,
    reference=ref.q_sample,
    cases=(
        Case("images (4, 3, 8, 8), t = 0, two random steps, 999; cosine schedule", 3,
             lambda g: _q_inputs(g, (4, 3, 8, 8), [0] + randint(g, 1, 999, 2) + [999], "cosine")),
        Case("2-D points (3, 2) at random steps", 2,
             lambda g: _q_inputs(g, (3, 2), randint(g, 0, 1000, 3), "cosine")),
        Case("one t for the whole batch, linear schedule", 2,
             lambda g: _q_inputs(g, (3, 1, 4, 4), randint(g, 0, 1000) * 3, "linear")),
        Case("batch size 1 at t = T - 1", 1, lambda g: _q_inputs(g, (1, 2, 4, 4), [999], "linear")),
        Case("float64 x0 and noise give a float64 xt", 2,
             lambda g: _q_inputs(g, (2, 3, 4, 4), [0, randint(g, 1, 1000)[0]], "cosine", torch.float64)),
    ),
    variants=(
        Variant("zeros", lambda x0, t, noise, alpha_bar: torch.zeros_like(x0), "you return zeros"),
        Variant("identity", lambda x0, t, noise, alpha_bar: x0, "you return x0 unchanged: mix in the noise"),
        Variant("off_by_one",
                lambda x0, t, noise, alpha_bar: noised(alpha_bar, t - 1, x0, noise), INDEX_HINT),
        Variant("no_sqrt", lambda x0, t, noise, alpha_bar: (lambda ab: ab * x0 + (1 - ab) * noise)(
            broadcast_like(alpha_bar, t, x0)),
            "take square roots: xt = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise"),
        Variant("swapped", lambda x0, t, noise, alpha_bar: noised(alpha_bar, t, noise, x0),
                "sqrt(alpha_bar_t) multiplies x0 and sqrt(1 - alpha_bar_t) the noise, not the other way"),
        Variant("not_broadcast",
                lambda x0, t, noise, alpha_bar: (lambda ab: ab.sqrt() * x0 + (1 - ab).sqrt() * noise)(
            alpha_bar[t].to(x0.dtype)), BROADCAST_HINT),
        Variant("float64", lambda x0, t, noise, alpha_bar: noised(alpha_bar, t, x0.double(), noise.double()),
                "alpha_bar is float64: convert alpha_bar[t] to x0.dtype so that xt keeps x0's dtype"),
        Variant("always_float32",
                lambda x0, t, noise, alpha_bar: noised(alpha_bar, t, x0.float(), noise.float()),
                "keep x0's dtype: a float64 x0 gives a float64 xt"),
        Variant("no_noise_at_t0", _no_noise_at_t0,
                "at t = 0 noise is already added: alpha_bar[0] = 1 - betas[0] < 1; don't return x0 as is"),
        Variant("first_t_only",
                lambda x0, t, noise, alpha_bar: noised(alpha_bar, t[:1].expand(len(t)), x0, noise),
                "each sample has its own step: use t[i] for sample i, not one t for the whole batch"),
    ),
    error_hints=((r"must match the size of tensor", BROADCAST_HINT), (r"out of bounds", INDEX_HINT)),
    t0_hint="at t = 0 noise is already added: alpha_bar[0] = 1 - betas[0] < 1, so don't return x0 unchanged",
)

EXERCISES = (EX01, EX02, EX03)
