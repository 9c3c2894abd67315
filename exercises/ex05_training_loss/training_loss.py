"""Exercise 05: the loss a diffusion model is trained with.

Taught in notebook 03 (the U-Net denoiser). Grade it with: python -m minidiff grade --only ex05
Write it with torch only: minidiff is the answer key, and it cannot be imported while grading.
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


def diffusion_loss(model: Callable[[Tensor, Tensor, Tensor | None], Tensor], x0: Tensor, t: Tensor,
                   noise: Tensor, alpha_bar: Tensor, cond: Tensor | None = None) -> Tensor:
    """The simple DDPM loss: mean squared error between the noise and the model's guess of it
    (Ho et al. 2020, eq. 14).

    1. Noise x0 to xt = sqrt(alpha_bar[t]) x0 + sqrt(1 - alpha_bar[t]) noise (as in ex03).
    2. Ask the model: eps_pred = model(xt, t, cond).
    3. Return the mean over all elements of (eps_pred - noise) ** 2.

    The noise and timesteps are given, so the loss is deterministic: don't draw random numbers.

    Args:
        model: callable model(xt (B, ...), t (B,), cond) -> eps prediction (B, ...).
        x0: (B, ...) clean samples.
        t: (B,) int64 timesteps in 0..T-1.
        noise: (B, ...) the noise to add, x0's shape.
        alpha_bar: (T,) float64 schedule.
        cond: text embedding (B, L, D) handed on to the model, or None.

    Returns:
        scalar loss: a 0-dimensional tensor that gradients flow through, float32 (x0's dtype) or float64
        (if you compute in alpha_bar's float64): both are graded as right.
    """
    raise NotImplementedError("ex05 is not started: write diffusion_loss (taught in notebook 03, the U-Net "
                              "denoiser)")
