"""Exercise 12: the whole DDIM sampling loop, from pure noise to a clean sample.

Taught in notebook 04 (samplers). Grade it with: python -m minidiff grade --only ex12
Write it with torch only: minidiff is the answer key, and it cannot be imported while grading.
"""

import math

import torch
from torch import Tensor


def ddim_sample(model, x_T: Tensor, alpha_bar: Tensor, steps: int) -> Tensor:
    """Run deterministic DDIM (eta = 0, Song et al. 2021) for ``steps`` steps from ``x_T``.

    1. Plan the timesteps with minidiff's "trailing" spacing (Lin et al. 2024, table 2), from
       noisiest to cleanest: t_i = round(T - i * T / steps) - 1 for i = 0, ..., steps - 1, so the
       first is T - 1. After the last one comes t_prev = -1, the clean end (alpha_bar = 1).
    2. At each t: eps_pred = model(x, t_batch, None) with t_batch = torch.full((B,), t), a (B,)
       LongTensor; x0_pred = (x - sqrt(1 - ab_t) eps_pred) / sqrt(ab_t); step to t_prev:
       x = sqrt(ab_prev) x0_pred + sqrt(1 - ab_prev) eps_pred (ex07's step).

    Args:
        model: a callable model(xt (B, ...), t (B,) long, cond) -> eps_pred (B, ...); pass cond=None.
        x_T: (B, ...) pure noise at t = T - 1, float32 or float64.
        alpha_bar: (T,) float64 schedule.
        steps: the number of model calls, from 1 to T.

    Returns:
        the clean sample (B, ...), with x_T's shape and dtype.
    """
    raise NotImplementedError("ex12 is not started: write ddim_sample (taught in notebook 04, samplers)")
