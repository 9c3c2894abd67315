"""Exercise 03: q_sample, drawing a noisy x_t from a clean x_0 in one jump.

Taught in notebook 01 (forward noising). Grade it with: python -m minidiff grade --only ex03
Write it with torch only: minidiff is the answer key, and it cannot be imported while grading.
"""

import torch
from torch import Tensor


def q_sample(x0: Tensor, t: Tensor, noise: Tensor, alpha_bar: Tensor) -> Tensor:
    """x_t = sqrt(alpha_bar[t]) * x0 + sqrt(1 - alpha_bar[t]) * noise (Ho et al. 2020, eq. 4).

    Each sample i uses its own timestep t[i].

    Args:
        x0: (B, ...) clean samples: (B, C, H, W) images, (B, 2) points, any shape after the batch.
        t: (B,) int64 timesteps in 0..T-1.
        noise: (B, ...) standard normal noise, x0's shape.
        alpha_bar: (T,) float64 schedule.

    Returns:
        xt: (B, ...) with x0's shape and dtype.
    """
    raise NotImplementedError("ex03 is not started: write q_sample (taught in notebook 01, forward noising)")
