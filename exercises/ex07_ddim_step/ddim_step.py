"""Exercise 07: one deterministic DDIM step, which may jump over many timesteps at once.

Taught in notebook 04 (samplers). Grade it with: python -m minidiff grade --only ex07
Write it with torch only: minidiff is the answer key, and code that imports it is flagged.
"""

import math

import torch
from torch import Tensor


def ddim_step(xt: Tensor, t: int, t_prev: int, eps_pred: Tensor, alpha_bar: Tensor) -> Tensor:
    """Move x_t to x_{t_prev} along the predicted noise, eta = 0 (Song et al. 2021, eq. 12).

    1. Predict the clean sample: x0 = (xt - sqrt(1 - ab_t) * eps_pred) / sqrt(ab_t), ab_t = alpha_bar[t].
    2. Re-noise it to t_prev with the same noise: sqrt(ab_prev) * x0 + sqrt(1 - ab_prev) * eps_pred,
       where ab_prev = alpha_bar[t_prev], and ab_prev = 1 when t_prev = -1 (the clean end).

    Args:
        xt: (B, ...) current samples at timestep t.
        t: current timestep, an int in 0..T-1 (the whole batch is at the same step).
        t_prev: the next, less noisy timestep, an int < t; -1 means "clean".
        eps_pred: (B, ...) the model's noise prediction at (xt, t).
        alpha_bar: (T,) float64 schedule.

    Returns:
        x_{t_prev}: (B, ...) with xt's shape and dtype.
    """
    raise NotImplementedError("ex07 is not started: write ddim_step (taught in notebook 04, samplers)")
