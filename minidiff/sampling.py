"""Samplers: turn noise into data by running the learned denoiser backwards.

One loop, five update rules. Every sampler sees the same thing at each step: the current ``xt``
at timestep ``t``, the model's estimate of the clean sample ``x0`` and of the noise ``eps``, and the
next timestep ``t_prev`` it must step to (``-1`` means "clean"). They work on tensors of any shape:
2-D points, pixels and latents go through the same code.

The ODE samplers (Euler, Heun, DPM-Solver++) work in the variance-exploding coordinates of Karras
et al. 2022: ``x_ve = xt / sqrt(alpha_bar)`` and ``sigma = sqrt((1 - alpha_bar) / alpha_bar)``, where
the probability-flow ODE reads ``d x_ve / d sigma = eps``. In these coordinates DDIM with eta = 0 is
exactly Euler's method (Karras et al. 2022, sec. 3), a fact the tests check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from torch import Tensor

from minidiff.schedule import NoiseSchedule, posterior_from_alpha_bar, predict_eps, predict_x0

SAMPLERS = ("ddpm", "ddim", "euler", "heun", "dpmpp_2m")
SPACINGS = ("leading", "trailing", "linspace")

Model = Callable[[Tensor, Tensor, Any], Tensor]
Callback = Callable[[int, int, Tensor, Tensor, Tensor], None]
Generators = Optional[torch.Generator | list[torch.Generator]]  # one per batch, or one per image


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


@dataclass
class Step:
    """What an update rule sees at one step; ``history`` carries state between steps."""

    x: Tensor  # (B, ...) current sample at timestep t
    t: int
    t_prev: int  # -1 means the clean end
    ab: float  # alpha_bar at t
    ab_prev: float  # alpha_bar at t_prev (1.0 at the clean end)
    x0: Tensor  # (B, ...) predicted clean sample
    eps: Tensor  # (B, ...) predicted noise
    denoise: Callable[[Tensor, int], tuple[Tensor, Tensor]]
    generator: Generators
    eta: float
    history: dict = field(default_factory=dict)


def _noise_like(x: Tensor, generator: Generators) -> Tensor:
    """Standard normal noise shaped like x (B, ...); a list of generators draws image i from generator i."""
    if isinstance(generator, (list, tuple)):
        return torch.stack([_noise_like(x[i:i + 1], g)[0] for i, g in enumerate(generator)])  # (B, ...)
    device = x.device if generator is None else generator.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


def ddim_step(s: Step) -> Tensor:
    """DDIM update (Song et al. 2021, eq. 12); eta = 0 is deterministic, eta = 1 is ancestral."""
    # 1. the noise level injected at this step (eq. 16)
    var = s.eta**2 * (1 - s.ab_prev) / (1 - s.ab) * (1 - s.ab / s.ab_prev)
    # 2. point back along the predicted noise direction and add fresh noise
    x = math.sqrt(s.ab_prev) * s.x0 + math.sqrt(max(1 - s.ab_prev - var, 0.0)) * s.eps
    if var > 0:
        x = x + math.sqrt(var) * _noise_like(x, s.generator)
    return x


def ddpm_step(s: Step) -> Tensor:
    """Ancestral step: sample the posterior q(x_{t_prev} | x_t, x0 = predicted x0) (Ho et al. 2020, eq. 7)."""
    mean, var = posterior_from_alpha_bar(s.ab, s.ab_prev, s.x0, s.x)
    if s.t_prev < 0:
        return mean
    return mean + math.sqrt(var) * _noise_like(mean, s.generator)


def _sigmas(s: Step) -> tuple[float, float]:
    return math.sqrt((1 - s.ab) / s.ab), math.sqrt((1 - s.ab_prev) / s.ab_prev)


def euler_step(s: Step) -> Tensor:
    """Euler on the probability-flow ODE d x_ve / d sigma = eps (Karras et al. 2022, alg. 1 without the 2nd order)."""
    sigma, sigma_prev = _sigmas(s)
    x_ve = s.x / math.sqrt(s.ab)  # variance-exploding coordinates
    x_ve = x_ve + (sigma_prev - sigma) * s.eps
    return x_ve * math.sqrt(s.ab_prev)


def heun_step(s: Step) -> Tensor:
    """Heun's predictor-corrector: a DDIM (Euler) predictor, then the trapezoid rule on x0 (Karras et al. 2022, alg. 1).

    The trapezoid is taken after the linear part of the ODE is integrated exactly, in log-SNR
    (Lu et al. 2022, eq. 9): with a cosine schedule sigma_max is about 2e4, and the plain sigma-space
    trapezoid of Karras et al. (who stop at sigma_max = 80) is then wildly wrong on the first step.
    The last step, to sigma = 0, stays first order, as in Karras et al.
    """
    # 1. Euler predictor (identical to DDIM with eta = 0)
    x_euler = euler_step(s)
    if s.t_prev < 0:
        return x_euler
    # 2. corrector: average the x0 predictions at both ends, then take the same exact-linear step
    x0_prev, _ = s.denoise(x_euler, s.t_prev)
    sig_t, sig_prev, alpha_prev = math.sqrt(1 - s.ab), math.sqrt(1 - s.ab_prev), math.sqrt(s.ab_prev)
    h = 0.5 * math.log(s.ab_prev / (1 - s.ab_prev)) - 0.5 * math.log(s.ab / (1 - s.ab))  # lambda step
    return (sig_prev / sig_t) * s.x - alpha_prev * math.expm1(-h) * 0.5 * (s.x0 + x0_prev)


def dpmpp_2m_step(s: Step) -> Tensor:
    """DPM-Solver++(2M), multistep second order in log-SNR (Lu et al. 2022, alg. 2)."""
    alpha_prev, sig_t, sig_prev = math.sqrt(s.ab_prev), math.sqrt(1 - s.ab), math.sqrt(1 - s.ab_prev)
    lam = 0.5 * math.log(s.ab / (1 - s.ab))  # lambda = log(alpha / sigma)
    last = s.history.get("last")
    s.history["last"] = (lam, s.x0)
    if s.t_prev < 0:
        return s.x0  # the final jump to sigma = 0 lands on the data prediction
    lam_prev = 0.5 * math.log(s.ab_prev / (1 - s.ab_prev))
    h = lam_prev - lam
    # 1. data prediction: first order on the first step, then extrapolate with the previous one
    d = s.x0
    if last is not None:
        r = (lam - last[0]) / h
        d = (1 + 1 / (2 * r)) * s.x0 - 1 / (2 * r) * last[1]
    # 2. exponential integrator update (eq. 10 of Lu et al. 2022)
    return (sig_prev / sig_t) * s.x - alpha_prev * math.expm1(-h) * d


UPDATE_RULES: dict[str, Callable[[Step], Tensor]] = {
    "ddpm": ddpm_step, "ddim": ddim_step, "euler": euler_step, "heun": heun_step, "dpmpp_2m": dpmpp_2m_step,
}


def model_evaluations(sampler: str, steps: int) -> int:
    """How many times ``sampler`` calls the model in ``steps`` steps (Heun calls it twice per step but the last)."""
    return 2 * steps - 1 if sampler == "heun" else steps


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
    callback: Optional[Callback] = None,
    timesteps: Optional[Tensor] = None,
) -> Tensor:
    """Run ``sampler`` from ``x_T`` (B, ...) for ``steps`` steps; return the clean sample (B, ...).

    ``model(xt, t, cond)`` returns a prediction of type ``model.prediction_type`` (default "eps").
    ``callback(i, t, xt, x0_pred, eps_pred)`` is called at every step. ``generator`` feeds the
    stochastic samplers; a list of B generators gives every image its own stream, so an image does
    not depend on which others share its batch. ``timesteps`` (descending)
    overrides ``steps``/``spacing``, for image-to-image that starts part-way.
    """
    if sampler not in UPDATE_RULES:
        raise ValueError(f"sampler={sampler!r} is not known; choose one of {SAMPLERS}")
    if eta < 0:
        raise ValueError(f"eta={eta} is not allowed; eta must be >= 0 (0 = deterministic DDIM, 1 = DDPM-like)")
    ts = make_timesteps(schedule.T, steps, spacing) if timesteps is None else timesteps.long()
    prediction_type = getattr(model, "prediction_type", "eps")
    alpha_bar = schedule.alpha_bar.tolist()
    batch = x_T.shape[0]

    def denoise(x: Tensor, t: int) -> tuple[Tensor, Tensor]:
        """Call the model at integer timestep t and return (x0, eps) predictions."""
        t_batch = torch.full((batch,), t, dtype=torch.long, device=x.device)  # (B,)
        pred = model(x, t_batch, cond)
        return (predict_x0(schedule, pred, x, t_batch, prediction_type),
                predict_eps(schedule, pred, x, t_batch, prediction_type))

    x = x_T
    history: dict = {}
    for i, t in enumerate(ts.tolist()):
        t_prev = ts[i + 1].item() if i + 1 < len(ts) else -1
        x0, eps = denoise(x, t)
        if callback is not None:
            callback(i, t, x, x0, eps)
        step = Step(x=x, t=t, t_prev=t_prev, ab=alpha_bar[t], ab_prev=alpha_bar[t_prev] if t_prev >= 0 else 1.0,
                    x0=x0, eps=eps, denoise=denoise, generator=generator, eta=1.0 if sampler == "ddpm" else eta,
                    history=history)
        x = UPDATE_RULES[sampler](step)
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
    prediction_type = getattr(model, "prediction_type", "eps")
    alpha_bar = schedule.alpha_bar.tolist()
    x = x0
    levels = [-1] + ts
    for s, t in zip(levels[:-1], levels[1:]):
        t_eval = max(s, ts[0])
        t_batch = torch.full((x.shape[0],), t_eval, dtype=torch.long, device=x.device)
        pred = model(x, t_batch, cond)
        eps = predict_eps(schedule, pred, x, t_batch, prediction_type)
        ab_s = alpha_bar[s] if s >= 0 else 1.0
        x0_hat = (x - math.sqrt(1 - ab_s) * eps) / math.sqrt(ab_s)
        x = math.sqrt(alpha_bar[t]) * x0_hat + math.sqrt(1 - alpha_bar[t]) * eps
    return x
