"""Exercise 01: the linear noise schedule, from betas to alpha_bar.

Taught in notebook 01 (forward noising). Grade it with: python -m minidiff grade --only ex01
Write it with torch only: minidiff is the answer key, and code that imports it is flagged.
"""

import torch
from torch import Tensor


def alpha_bar_linear(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """alpha_bar of the linear schedule (Ho et al. 2020, sec. 4).

    betas: T values evenly spaced from beta_start to beta_end, both ends included.
    alphas = 1 - betas, and alpha_bar[t] = alphas[0] * alphas[1] * ... * alphas[t].

    Args:
        T: number of diffusion steps (>= 1).
        beta_start: beta at step 0.
        beta_end: beta at step T - 1.

    Returns:
        alpha_bar: (T,) float64.
    """
    raise NotImplementedError("ex01 is not started: write alpha_bar_linear (taught in notebook 01, forward noising)")
