"""Exercise 04: the sinusoidal timestep embedding that tells the U-Net how noisy its input is.

Taught in notebook 03 (the U-Net denoiser). Grade it with: python -m minidiff grade --only ex04
Write it with torch only: minidiff is the answer key, and it cannot be imported while grading.
"""

import math

import torch
from torch import Tensor

MAX_PERIOD = 10_000  # Vaswani et al. 2017, sec. 3.5: the longest wavelength


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """Sines and cosines of t at geometrically spaced frequencies (Vaswani et al. 2017; Ho et al. 2020).

    With half = dim // 2 and frequencies w_i = MAX_PERIOD ** (-i / half) for i = 0..half-1:
    embedding = [sin(t w_0), ..., sin(t w_{half-1}), cos(t w_0), ..., cos(t w_{half-1})].

    Args:
        t: (B,) timesteps, int64 or float (continuous time is allowed).
        dim: embedding width, even and >= 2.

    Returns:
        (B, dim) float32.
    """
    raise NotImplementedError("ex04 is not started: write timestep_embedding "
                              "(taught in notebook 03, the U-Net denoiser)")
