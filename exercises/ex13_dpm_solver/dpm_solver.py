"""Exercise 13: one step of DPM-Solver++(2M), the second-order multistep sampler.

Taught in notebook 04 (samplers). Grade it with: python -m minidiff grade --only ex13
Write it with torch only: minidiff is the answer key, and it cannot be imported while grading.
"""

import math

import torch
from torch import Tensor


def dpmpp_2m_step(xt: Tensor, x0_pred: Tensor, x0_pred_last: Tensor | None, alpha_bar_last: float,
                  alpha_bar_t: float, alpha_bar_prev: float) -> Tensor:
    """Step xt from alpha_bar_t to alpha_bar_prev with DPM-Solver++(2M) (Lu et al. 2022, alg. 2).

    With lambda(ab) = 0.5 * log(ab / (1 - ab)) (half the log-SNR) and std(ab) = sqrt(1 - ab):
    1. At the clean end (alpha_bar_prev == 1.0) return x0_pred.
    2. h = lambda(alpha_bar_prev) - lambda(alpha_bar_t). On the first step (x0_pred_last is None)
       D = x0_pred; otherwise r = (lambda(alpha_bar_t) - lambda(alpha_bar_last)) / h and
       D = (1 + 1 / (2 r)) x0_pred - 1 / (2 r) x0_pred_last.
    3. x_prev = std(alpha_bar_prev) / std(alpha_bar_t) * xt - sqrt(alpha_bar_prev) * (exp(-h) - 1) * D.

    Args:
        xt: (B, ...) samples at alpha_bar_t, float32 or float64.
        x0_pred: (B, ...) the model's clean-sample prediction at xt.
        x0_pred_last: (B, ...) the prediction of the step before, or None on the first step.
        alpha_bar_last: alpha_bar of the step before (0.0, unused, on the first step).
        alpha_bar_t: alpha_bar now, in (0, 1).
        alpha_bar_prev: alpha_bar after the step, in (alpha_bar_t, 1]; 1.0 is the clean end.

    Returns:
        x_prev: (B, ...) with xt's shape and dtype.
    """
    raise NotImplementedError("ex13 is not started: write dpmpp_2m_step (taught in notebook 04, samplers)")
