"""Samplers: turn noise into data by running the learned denoiser backwards.

Each update rule is a pure formula with explicit arguments (``ddpm_step``, ``ddim_step``, ...), and one
loop runs them all: at every timestep ``t``, predict ``(x0_pred, eps_pred)``, call the callback, step to
``t_prev`` (``-1`` is the clean end). One loop with the steps plugged in, not one loop per sampler as in
k-diffusion, because ``pipeline.py`` writes the same loop out: a reader learns it once. Tensors of any
shape work: 2-D points, pixels and latents go through the same code.

Euler works in the variance-exploding coordinates of Karras et al. 2022, ``x_ve = xt / sqrt(alpha_bar)``,
where the probability-flow ODE reads ``d x_ve / d sigma = eps`` and DDIM with eta = 0 is exactly Euler's
method (sec. 3; the tests check it). Heun and DPM-Solver++ integrate in log-SNR (Lu et al. 2022).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from minidiff.schedule import (
    NoiseSchedule,
    log_snr_from_alpha_bar,
    posterior_from_alpha_bar,
    predict_eps,
    predict_x0,
    sigma_from_alpha_bar,
)

SAMPLERS = ("ddpm", "ddim", "euler", "heun", "dpmpp_2m")
SPACINGS = ("leading", "trailing", "linspace")

Model = Callable[[Tensor, Tensor, Any], Tensor]
Denoiser = Callable[[Tensor, int], tuple[Tensor, Tensor]]  # (xt, t) -> (x0_pred, eps_pred)
Callback = Callable[[int, int, Tensor, Tensor, Tensor], None]  # (i, t, xt, x0_pred, eps_pred)
StepFn = Callable[[Tensor, Tensor, Tensor, int, int], Tensor]  # (xt, x0_pred, eps_pred, t, t_prev) -> x_prev
Generators = torch.Generator | list[torch.Generator] | None  # one per batch, or one per image


def make_timesteps(T: int, steps: int, spacing: str = "trailing") -> Tensor:
    """The ``steps`` timesteps a sampler visits, from noisiest to cleanest: LongTensor (steps,).

    leading:  0, k, 2k, ... with k = T // steps (DDIM paper); never starts at T - 1.
    trailing: T - 1, T - 1 - k, ... (Lin et al. 2024, table 2); starts from pure noise.
    linspace: evenly spaced from T - 1 down to 0, rounded.
    """
    if not isinstance(steps, int) or steps < 1 or steps > T:
        raise ValueError(f"steps={steps!r} is not allowed; steps must be an integer from 1 to T={T}")
    if spacing == "leading":
        ts = torch.arange(steps) * (T // steps)
    elif spacing == "trailing":
        ts = torch.round(torch.arange(T, 0, -T / steps)[:steps]).long() - 1
        ts = ts.flip(0)
    elif spacing == "linspace":
        ts = torch.linspace(0, T - 1, steps).round().long()
    else:
        raise ValueError(f"spacing={spacing!r} is not known; choose one of {SPACINGS}")
    return ts.flip(0).long()


def model_evaluations(sampler: str, steps: int) -> int:
    """How many times ``sampler`` calls the model in ``steps`` steps (Heun: twice per step but the last)."""
    return 2 * steps - 1 if sampler == "heun" else steps


# The update rules: xt (B, ...) at alpha_bar_t -> x (B, ...) at alpha_bar_prev (1.0 at the clean end)


def ddpm_step(xt: Tensor, x0_pred: Tensor, alpha_bar_t: float | Tensor, alpha_bar_prev: float | Tensor,
              noise: Tensor) -> Tensor:
    """Sample the posterior q(x_prev | xt, x0 = x0_pred) (Ho et al. 2020, eqs. 6-7); noise (B, ...).

    The alpha_bars are floats, or (B, 1, ..., 1) tensors for a timestep per sample.
    """
    mean, var = posterior_from_alpha_bar(alpha_bar_t, alpha_bar_prev, x0_pred, xt)  # var = 0 at the clean end
    return mean + var**0.5 * noise


def ddim_step(x0_pred: Tensor, eps_pred: Tensor, alpha_bar_t: float, alpha_bar_prev: float, eta: float,
              noise: Tensor | None) -> Tensor:
    """DDIM (Song et al. 2021, eq. 12): eta = 0 is deterministic (noise may be None), eta = 1 ancestral."""
    # 1. the variance of the fresh noise (eq. 16); none at eta = 0
    alpha_jump = alpha_bar_t / alpha_bar_prev  # alpha of the jump from t_prev to t
    var = eta**2 * (1 - alpha_bar_prev) / (1 - alpha_bar_t) * (1 - alpha_jump) if eta else 0.0
    # 2. re-noise x0_pred to alpha_bar_prev along eps_pred, then add the fresh noise
    x = math.sqrt(alpha_bar_prev) * x0_pred + math.sqrt(max(1 - alpha_bar_prev - var, 0.0)) * eps_pred
    return x if var == 0 else x + math.sqrt(var) * noise


def euler_step(xt: Tensor, eps_pred: Tensor, alpha_bar_t: float, alpha_bar_prev: float) -> Tensor:
    """Euler on the probability-flow ODE d x_ve / d sigma = eps (Karras et al. 2022, alg. 1, first order)."""
    sigma_t, sigma_prev = sigma_from_alpha_bar(alpha_bar_t), sigma_from_alpha_bar(alpha_bar_prev)
    x_ve = xt / math.sqrt(alpha_bar_t)  # variance-exploding coordinates
    return (x_ve + (sigma_prev - sigma_t) * eps_pred) * math.sqrt(alpha_bar_prev)


def exponential_step(xt: Tensor, x0_pred: Tensor, alpha_bar_t: float, alpha_bar_prev: float) -> Tensor:
    """First-order DPM-Solver++ (Lu et al. 2022, eq. 10): DDIM with eta = 0 in log-SNR; alpha_bar_prev < 1.

    x_prev = (std_prev / std_t) xt - sqrt(alpha_bar_prev) (exp(-h) - 1) x0_pred, with
    std = sqrt(1 - alpha_bar) and h the step in lambda = log-SNR / 2.
    """
    std_t, std_prev = math.sqrt(1 - alpha_bar_t), math.sqrt(1 - alpha_bar_prev)
    h = 0.5 * (log_snr_from_alpha_bar(alpha_bar_prev) - log_snr_from_alpha_bar(alpha_bar_t))
    return (std_prev / std_t) * xt - math.sqrt(alpha_bar_prev) * math.expm1(-h) * x0_pred


def heun_step(xt: Tensor, x0_pred: Tensor, x0_pred_next: Tensor, alpha_bar_t: float,
              alpha_bar_prev: float) -> Tensor:
    """Heun's corrector (Karras et al. 2022, alg. 1): the trapezoid rule on x0 after an Euler predictor.

    ``x0_pred_next`` is the model's x0 at the Euler prediction. The linear part of the ODE is integrated
    exactly in log-SNR (Lu et al. 2022, eq. 9): at a cosine schedule's sigma_max of about 2e4 the
    sigma-space trapezoid of Karras et al. (sigma_max = 80) fails.
    """
    return exponential_step(xt, 0.5 * (x0_pred + x0_pred_next), alpha_bar_t, alpha_bar_prev)


def dpmpp_2m_step(xt: Tensor, x0_pred: Tensor, x0_pred_last: Tensor | None, alpha_bar_last: float,
                  alpha_bar_t: float, alpha_bar_prev: float) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, alg. 2): extrapolate x0_pred with the last step's, then step.

    ``x0_pred_last`` (None on the first step) is the prediction at ``alpha_bar_last``. The final jump
    to the clean end lands on x0_pred itself.
    """
    if alpha_bar_prev == 1.0:
        return x0_pred
    if x0_pred_last is None:
        return exponential_step(xt, x0_pred, alpha_bar_t, alpha_bar_prev)
    lambda_last, lambda_t, lambda_prev = (0.5 * log_snr_from_alpha_bar(ab)
                                          for ab in (alpha_bar_last, alpha_bar_t, alpha_bar_prev))
    r = (lambda_t - lambda_last) / (lambda_prev - lambda_t)  # ratio of the last step to this one
    d = (1 + 1 / (2 * r)) * x0_pred - 1 / (2 * r) * x0_pred_last
    return exponential_step(xt, d, alpha_bar_t, alpha_bar_prev)


def _noise_like(x: Tensor, generator: Generators) -> Tensor:
    """Standard normal noise shaped like x (B, ...); a list of generators draws image i from generator i."""
    if isinstance(generator, (list, tuple)):
        return torch.stack([_noise_like(x[i:i + 1], g)[0] for i, g in enumerate(generator)])  # (B, ...)
    device = x.device if generator is None else generator.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


def denoiser(model: Model, schedule: NoiseSchedule, cond: Any = None) -> Denoiser:
    """``denoise(xt (B, ...), t)``: the model's prediction at integer timestep t as (x0_pred, eps_pred)."""
    prediction_type = getattr(model, "prediction_type", "eps")

    def denoise(xt: Tensor, t: int) -> tuple[Tensor, Tensor]:
        t_batch = torch.full((xt.shape[0],), t, dtype=torch.long, device=xt.device)  # (B,)
        pred = model(xt, t_batch, cond)
        return (predict_x0(schedule, pred, xt, t_batch, prediction_type),
                predict_eps(schedule, pred, xt, t_batch, prediction_type))

    return denoise


def make_step(schedule: NoiseSchedule, sampler: str, denoise: Denoiser, generator: Generators = None,
              eta: float = 0.0) -> StepFn:
    """``step(xt, x0_pred, eps_pred, t, t_prev) -> x_prev`` for ``sampler``: one of the rules above.

    Heun calls ``denoise`` again at its Euler prediction; DPM-Solver++(2M) remembers the last step's
    x0_pred, so each run needs a fresh step; DDPM, and DDIM with eta > 0, draw noise from ``generator``.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler={sampler!r} is not known; choose one of {SAMPLERS}")
    if eta < 0:
        raise ValueError(f"eta={eta} is not allowed; eta must be >= 0 (0: deterministic DDIM, 1: DDPM-like)")
    alpha_bar = schedule.alpha_bar.tolist() + [1.0]  # index -1 is the clean end
    x0_pred_last, alpha_bar_last = None, 0.0  # DPM-Solver++(2M)'s memory of the last step

    def step(xt: Tensor, x0_pred: Tensor, eps_pred: Tensor, t: int, t_prev: int) -> Tensor:
        nonlocal x0_pred_last, alpha_bar_last
        ab_t, ab_prev = alpha_bar[t], alpha_bar[t_prev]
        if sampler == "ddpm":
            return ddpm_step(xt, x0_pred, ab_t, ab_prev, _noise_like(xt, generator))
        if sampler == "ddim":
            noise = _noise_like(xt, generator) if eta > 0 else None
            return ddim_step(x0_pred, eps_pred, ab_t, ab_prev, eta, noise)
        if sampler == "dpmpp_2m":
            x = dpmpp_2m_step(xt, x0_pred, x0_pred_last, alpha_bar_last, ab_t, ab_prev)
            x0_pred_last, alpha_bar_last = x0_pred, ab_t
            return x
        x_euler = euler_step(xt, eps_pred, ab_t, ab_prev)
        if sampler == "euler" or t_prev < 0:  # Heun's last step stays first order, as in Karras et al.
            return x_euler
        x0_pred_next, _ = denoise(x_euler, t_prev)  # Heun: the model again, at the Euler prediction
        return heun_step(xt, x0_pred, x0_pred_next, ab_t, ab_prev)

    return step


@torch.no_grad()
def sample(
    model: Model,
    x_T: Tensor,
    schedule: NoiseSchedule,
    steps: int,
    sampler: str = "ddim",
    cond: Any = None,
    generator: Generators = None,
    eta: float = 0.0,
    spacing: str = "trailing",
    callback: Callback | None = None,
    timesteps: Tensor | None = None,
) -> Tensor:
    """Run ``sampler`` from ``x_T`` (B, ...) for ``steps`` steps; return the clean sample (B, ...).

    ``model(xt, t, cond)`` returns a prediction of type ``model.prediction_type`` (default "eps").
    ``callback(i, t, xt, x0_pred, eps_pred)`` is called at every step. ``generator`` feeds the
    stochastic samplers; a list of B generators gives every image its own stream, so an image does
    not depend on which others share its batch. ``timesteps`` (descending) overrides
    ``steps``/``spacing``, for image-to-image that starts part-way.
    """
    denoise = denoiser(model, schedule, cond)
    step = make_step(schedule, sampler, denoise, generator, eta)
    ts = (make_timesteps(schedule.T, steps, spacing) if timesteps is None else timesteps).long().tolist()
    x = x_T
    for i, (t, t_prev) in enumerate(zip(ts, ts[1:] + [-1])):
        x0_pred, eps_pred = denoise(x, t)  # 1. predict
        if callback is not None:
            callback(i, t, x, x0_pred, eps_pred)
        x = step(x, x0_pred, eps_pred, t, t_prev)  # 2. step to t_prev
    return x


@torch.no_grad()
def ddim_invert(
    model: Model,
    x0: Tensor,
    schedule: NoiseSchedule,
    steps: int,
    cond: Any = None,
    spacing: str = "trailing",
) -> Tensor:
    """Run deterministic DDIM forwards, clean sample (B, ...) -> noise (B, ...) (Song et al. 2021, sec. 4.3).

    Each step evaluates the model at the current point and moves along the ODE to the next, noisier
    timestep; the first step, from the clean sample, uses the model at the cleanest timestep.
    """
    ts = make_timesteps(schedule.T, steps, spacing).flip(0).tolist()  # ascending
    denoise = denoiser(model, schedule, cond)
    alpha_bar = schedule.alpha_bar.tolist() + [1.0]  # index -1 is the clean end
    x = x0
    for s, t in zip([-1] + ts[:-1], ts):
        _, eps_pred = denoise(x, max(s, ts[0]))
        x0_pred = (x - math.sqrt(1 - alpha_bar[s]) * eps_pred) / math.sqrt(alpha_bar[s])  # Ho et al. eq. 15
        x = ddim_step(x0_pred, eps_pred, alpha_bar[s], alpha_bar[t], 0.0, None)
    return x
