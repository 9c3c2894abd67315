"""Exercise 07: one deterministic DDIM step, which may jump over many timesteps at once.

Taught in notebook 04 (samplers). Grade it with: python -m minidiff grade --only ex07
Write it with torch only: minidiff is the answer key, and it cannot be imported while grading.
"""

import math

import torch
from torch import Tensor


def ddim_step(xt: Tensor, t: int, t_prev: int, eps_pred: Tensor, alpha_bar: Tensor) -> Tensor:
    """Move x_t to x_{t_prev} along the predicted noise, eta = 0 (Song et al. 2021, eq. 12).

    1. Predict the clean sample: x0_pred = (xt - sqrt(1 - ab_t) * eps_pred) / sqrt(ab_t), ab_t = alpha_bar[t].
    2. Re-noise it to t_prev with the same noise: sqrt(ab_prev) * x0_pred + sqrt(1 - ab_prev) * eps_pred,
       where ab_prev = alpha_bar[t_prev]. t_prev = 0 is a real step (alpha_bar[0] < 1); only
       t_prev = -1 is the clean end, where ab_prev = 1 and the step returns x0_pred.

    Args:
        xt: (B, ...) current samples at timestep t, float32 or float64.
        t: current timestep, an int in 0..T-1 (the whole batch is at the same step).
        t_prev: the next, less noisy timestep, an int from -1 to t - 1; -1 means "clean".
        eps_pred: (B, ...) the model's noise prediction at (xt, t).
        alpha_bar: (T,) float64 schedule.

    Returns:
        x_{t_prev}: (B, ...) with xt's shape and dtype.
    """
    raise NotImplementedError("ex07 is not started: write ddim_step (taught in notebook 04, samplers)")
