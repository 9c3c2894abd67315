"""Exercise 01: the linear noise schedule, from betas to alpha_bar.

Taught in notebook 01 (forward noising). Grade it with: python -m minidiff grade --only ex01
Write it with torch only: minidiff is the answer key, and it cannot be imported while grading.
"""

import torch
from torch import Tensor

BETA_START = 1e-4  # Ho et al. 2020, sec. 4: beta at the first of T = 1000 steps
BETA_END = 0.02  # Ho et al. 2020, sec. 4: beta at the last of T = 1000 steps
MAX_BETA = 0.999  # Nichol & Dhariwal 2021: no step may destroy all of the signal


def alpha_bar_linear(T: int) -> Tensor:
    """alpha_bar of the linear schedule (Ho et al. 2020, sec. 4), for any number of steps T.

    betas: T values evenly spaced from BETA_START * 1000 / T to BETA_END * 1000 / T, both ends
    included, then clipped at MAX_BETA (the 1000 / T keeps the total noise the same for any T).
    alphas = 1 - betas, and alpha_bar[t] = alphas[0] * alphas[1] * ... * alphas[t].

    Args:
        T: number of diffusion steps (>= 1).

    Returns:
        alpha_bar: (T,) float64.
    """
    raise NotImplementedError("ex01 is not started: write alpha_bar_linear (taught in notebook 01, forward "
                              "noising)")
