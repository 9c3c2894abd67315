"""Exercise 02: the cosine noise schedule of Nichol & Dhariwal (2021).

Taught in notebook 01 (forward noising). Grade it with: python -m minidiff grade --only ex02
Write it with torch only: minidiff is the answer key, and it cannot be imported while grading.
"""

import math

import torch
from torch import Tensor

COSINE_S = 0.008  # Nichol & Dhariwal 2021, eq. 17: keeps beta from being tiny near t = 0
MAX_BETA = 0.999  # Nichol & Dhariwal 2021: betas are clipped here so the last step is not singular


def alpha_bar_cosine(T: int) -> Tensor:
    """alpha_bar of the cosine schedule (Nichol & Dhariwal 2021, eq. 17).

    With f(u) = cos^2((u + COSINE_S) / (1 + COSINE_S) * pi / 2) on the grid u = t / T:
    betas[t] = 1 - f((t + 1) / T) / f(t / T) for t = 0..T-1, clipped at MAX_BETA, and
    alpha_bar[t] = (1 - betas[0]) * ... * (1 - betas[t]). Until clipping this is f((t + 1) / T) / f(0).

    Args:
        T: number of diffusion steps (>= 1).

    Returns:
        alpha_bar: (T,) float64.
    """
    raise NotImplementedError("ex02 is not started: write alpha_bar_cosine (taught in notebook 01, forward "
                              "noising)")
