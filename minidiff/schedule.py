"""The forward (noising) process: beta schedules, q(x_t | x_0), the posterior, eps <-> x0 <-> v.

Everything a sampler or a training loss needs to know about the noise lives here. Notation follows
DESIGN.md: ``betas`` -> ``alphas = 1 - betas`` -> ``alpha_bar = cumprod(alphas)``; ``sigma`` is the
noise level in the variance-exploding view (Karras et al. 2022) and ``snr = alpha_bar / (1 - alpha_bar)``
(Kingma et al. 2021).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

SCHEDULES = ("linear", "cosine", "sigmoid")
PREDICTION_TYPES = ("eps", "x0", "v")

LINEAR_BETA_START = 1e-4  # Ho et al. 2020, sec. 4 (for T = 1000)
LINEAR_BETA_END = 0.02  # Ho et al. 2020, sec. 4 (for T = 1000)
COSINE_S = 0.008  # Nichol & Dhariwal 2021, eq. 17
MAX_BETA = 0.999  # Nichol & Dhariwal 2021: clip betas to avoid a singularity at t = T
SIGMOID_START, SIGMOID_END, SIGMOID_TAU = -3.0, 3.0, 1.0  # Jabri et al. 2022 (RIN), sigmoid schedule


@dataclass(frozen=True)
class NoiseSchedule:
    """A discrete noise schedule of T steps; all tensors are float64 of shape (T,)."""

    name: str
    betas: Tensor

    @property
    def T(self) -> int:
        return self.betas.shape[0]

    @property
    def alphas(self) -> Tensor:
        return 1.0 - self.betas

    @property
    def alpha_bar(self) -> Tensor:
        return torch.cumprod(self.alphas, dim=0)

    @property
    def sigma(self) -> Tensor:
        return sigma_from_alpha_bar(self.alpha_bar)

    @property
    def snr(self) -> Tensor:
        ab = self.alpha_bar
        return ab / (1.0 - ab)

    @property
    def log_snr(self) -> Tensor:
        return log_snr_from_alpha_bar(self.alpha_bar)


def sigma_from_alpha_bar(alpha_bar: Tensor | float) -> Tensor | float:
    """sigma = sqrt((1 - alpha_bar) / alpha_bar), the variance-exploding noise level (Karras et al. 2022)."""
    return ((1 - alpha_bar) / alpha_bar) ** 0.5


def log_snr_from_alpha_bar(alpha_bar: Tensor | float) -> Tensor | float:
    """log(alpha_bar / (1 - alpha_bar)) (Kingma et al. 2021); alpha_bar must lie in (0, 1)."""
    snr = alpha_bar / (1 - alpha_bar)
    return torch.log(snr) if isinstance(snr, Tensor) else math.log(snr)


def _alpha_bar_to_betas(alpha_bar_fn, T: int) -> Tensor:
    """betas_t = 1 - alpha_bar(t+1) / alpha_bar(t) on a grid of T steps (Nichol & Dhariwal 2021, eq. 17)."""
    s = torch.arange(T + 1, dtype=torch.float64) / T  # (T+1,) continuous time in [0, 1]
    ab = alpha_bar_fn(s)  # (T+1,)
    betas = 1.0 - ab[1:] / ab[:-1]  # (T,)
    return betas.clamp(max=MAX_BETA)


def make_schedule(name: str = "cosine", T: int = 1000) -> NoiseSchedule:
    """Build the ``name`` schedule with ``T`` steps.

    linear: betas from 1e-4 to 0.02, rescaled by 1000 / T so any T gives the same process (Ho et al. 2020).
    cosine: alpha_bar(s) = cos^2((s + 0.008) / 1.008 * pi / 2), normalised (Nichol & Dhariwal 2021).
    sigmoid: alpha_bar from a sigmoid of time (Jabri et al. 2022).
    """
    if not isinstance(T, int) or T < 1:
        raise ValueError(f"T={T!r} is not allowed; T must be an integer >= 1")
    if name == "linear":
        scale = 1000.0 / T
        betas = torch.linspace(LINEAR_BETA_START * scale, LINEAR_BETA_END * scale, T, dtype=torch.float64)
        return NoiseSchedule(name, betas.clamp(max=MAX_BETA))
    if name == "cosine":
        def f(s: Tensor) -> Tensor:
            return torch.cos((s + COSINE_S) / (1 + COSINE_S) * math.pi / 2) ** 2
        f0 = f(torch.zeros(1, dtype=torch.float64))
        return NoiseSchedule(name, _alpha_bar_to_betas(lambda s: f(s) / f0, T))
    if name == "sigmoid":
        lo = torch.sigmoid(torch.tensor(SIGMOID_START / SIGMOID_TAU, dtype=torch.float64))
        hi = torch.sigmoid(torch.tensor(SIGMOID_END / SIGMOID_TAU, dtype=torch.float64))

        def g(s: Tensor) -> Tensor:
            v = torch.sigmoid((s * (SIGMOID_END - SIGMOID_START) + SIGMOID_START) / SIGMOID_TAU)
            return (hi - v) / (hi - lo)
        return NoiseSchedule(name, _alpha_bar_to_betas(g, T))
    raise ValueError(f"schedule={name!r} is not known; choose one of {SCHEDULES}")


def gather(values: Tensor, t: Tensor, like: Tensor) -> Tensor:
    """values[t] reshaped to broadcast against ``like``: (T,), (B,) -> (B, 1, ..., 1), in like's dtype."""
    if t.ndim == 0:
        t = t.expand(like.shape[0])
    if t.shape[0] != like.shape[0]:
        raise ValueError(f"t has {t.shape[0]} entries but the batch has {like.shape[0]}; "
                         "pass one timestep per sample")
    T = values.shape[0]
    if t.min() < 0 or t.max() >= T:
        raise ValueError(f"t must lie in 0..{T - 1}; got values from {int(t.min())} to {int(t.max())}")
    out = values.to(like.device)[t.long().to(like.device)].to(like.dtype)  # (B,)
    return out.view(-1, *([1] * (like.ndim - 1)))  # (B, 1, ..., 1)


def q_sample(schedule: NoiseSchedule, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
    """Draw x_t ~ q(x_t | x_0) = N(sqrt(alpha_bar_t) x0, (1 - alpha_bar_t) I) (Ho et al. 2020, eq. 4).

    x0, noise: (B, ...); t: (B,) integer timesteps. Returns x_t with x0's shape.
    """
    if noise.shape != x0.shape:
        raise ValueError(f"noise has shape {tuple(noise.shape)} but x0 has {tuple(x0.shape)}; "
                         "they must match")
    ab = gather(schedule.alpha_bar, t, x0)  # (B, 1, ..., 1)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def posterior_from_alpha_bar(ab_t: Tensor | float, ab_s: Tensor | float, x0: Tensor,
                             xt: Tensor) -> tuple[Tensor, Tensor | float]:
    """Mean and variance of q(x_s | x_t, x_0) for any s < t, from alpha_bar_t and alpha_bar_s.

    The one-step posterior of Ho et al. 2020 (eqs. 6-7) with beta_t replaced by the jump's
    beta_{t|s} = 1 - alpha_bar_t / alpha_bar_s (Kingma et al. 2021, appendix A). s = -1 means the
    clean sample: pass ab_s = 1 and the mean is x0 with variance 0.
    """
    beta_ts = 1 - ab_t / ab_s  # variance of the jump from s to t
    coef_x0 = ab_s**0.5 * beta_ts / (1 - ab_t)
    coef_xt = (1 - beta_ts) ** 0.5 * (1 - ab_s) / (1 - ab_t)
    var = (1 - ab_s) / (1 - ab_t) * beta_ts
    return coef_x0 * x0 + coef_xt * xt, var


def q_posterior(schedule: NoiseSchedule, x0: Tensor, xt: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and variance of q(x_{t-1} | x_t, x_0) (Ho et al. 2020, eqs. 6-7).

    x0, xt: (B, ...); t: (B,) with t >= 1. Returns (mean (B, ...), variance (B, 1, ..., 1)):
    mean = sqrt(ab_{t-1}) beta_t / (1 - ab_t) x0 + sqrt(alpha_t) (1 - ab_{t-1}) / (1 - ab_t) x_t,
    variance = (1 - ab_{t-1}) / (1 - ab_t) beta_t.
    """
    if (t < 1).any():
        raise ValueError("q_posterior needs t >= 1: there is no x_{t-1} before step 0")
    ab_t = gather(schedule.alpha_bar, t, xt)  # (B, 1, ..., 1)
    ab_prev = gather(schedule.alpha_bar, t - 1, xt)  # (B, 1, ..., 1)
    return posterior_from_alpha_bar(ab_t, ab_prev, x0, xt)


def _check_type(prediction_type: str) -> None:
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type={prediction_type!r} is not known; "
                         f"choose one of {PREDICTION_TYPES}")


def predict_x0(schedule: NoiseSchedule, pred: Tensor, xt: Tensor, t: Tensor, prediction_type: str) -> Tensor:
    """Turn a model's prediction into x0 (Ho et al. 2020 eq. 15; Salimans & Ho 2022 for v)."""
    _check_type(prediction_type)
    ab = gather(schedule.alpha_bar, t, xt)
    if prediction_type == "eps":
        return (xt - (1 - ab).sqrt() * pred) / ab.sqrt()
    if prediction_type == "v":
        return ab.sqrt() * xt - (1 - ab).sqrt() * pred
    return pred


def predict_eps(schedule: NoiseSchedule, pred: Tensor, xt: Tensor, t: Tensor, prediction_type: str) -> Tensor:
    """Turn a model's prediction into the noise eps it implies."""
    _check_type(prediction_type)
    ab = gather(schedule.alpha_bar, t, xt)
    if prediction_type == "eps":
        return pred
    if prediction_type == "v":
        return (1 - ab).sqrt() * xt + ab.sqrt() * pred
    return (xt - ab.sqrt() * pred) / (1 - ab).sqrt()


def velocity(schedule: NoiseSchedule, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
    """v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0 (Salimans & Ho 2022, sec. 4); x0, noise: (B, ...)."""
    ab = gather(schedule.alpha_bar, t, x0)
    return ab.sqrt() * noise - (1 - ab).sqrt() * x0


def score_from_eps(schedule: NoiseSchedule, eps: Tensor, t: Tensor) -> Tensor:
    """Score grad log q(x_t) = -eps / sqrt(1 - alpha_bar_t) (Song et al. 2021, Vincent 2011)."""
    ab = gather(schedule.alpha_bar, t, eps)
    return -eps / (1 - ab).sqrt()


def training_target(schedule: NoiseSchedule, x0: Tensor, t: Tensor, noise: Tensor,
                    prediction_type: str) -> Tensor:
    """What a ``prediction_type`` model should output (B, ...) for xt = q_sample(schedule, x0, t, noise)."""
    _check_type(prediction_type)
    if prediction_type == "eps":
        return noise
    if prediction_type == "x0":
        return x0
    return velocity(schedule, x0, t, noise)
