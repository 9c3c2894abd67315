"""Exercise 06: one step of DDPM's ancestral sampler, from x_t to x_{t-1}.

Taught in notebook 04 (samplers). Grade it with: python -m minidiff grade --only ex06
Write it with torch only: minidiff is the answer key, and it cannot be imported while grading.
"""

import torch
from torch import Tensor


def ddpm_posterior_step(xt: Tensor, t: Tensor, x0_pred: Tensor, alpha_bar: Tensor, betas: Tensor,
                        noise: Tensor) -> Tensor:
    """Sample x_{t-1} from the posterior q(x_{t-1} | x_t, x_0 = x0_pred) (Ho et al. 2020, eqs. 6-7).

    With ab_t = alpha_bar[t], ab_prev = alpha_bar[t - 1] (and ab_prev = 1 when t = 0), alpha_t = 1 - betas[t]:
        mean = sqrt(ab_prev) * betas[t] / (1 - ab_t) * x0_pred
               + sqrt(alpha_t) * (1 - ab_prev) / (1 - ab_t) * xt
        var  = (1 - ab_prev) / (1 - ab_t) * betas[t]
        x_{t-1} = mean + sqrt(var) * noise
    At t = 0 the variance is 0 and the step returns x0_pred. A batch can mix t = 0 and t > 0: decide per
    sample. Compute the coefficients in float64 (near t = 0, 1 - ab_t is tiny and float32 loses most of its
    digits); convert only the result to xt's dtype.

    Args:
        xt: (B, ...) current samples, float32 or float64.
        t: (B,) int64 timesteps in 0..T-1, one per sample.
        x0_pred: (B, ...) the model's estimate of the clean sample.
        alpha_bar: (T,) float64 schedule; betas: (T,) float64, with alpha_bar = cumprod(1 - betas).
        noise: (B, ...) standard normal noise, xt's shape.

    Returns:
        x_{t-1}: (B, ...) with xt's shape and dtype.
    """
    raise NotImplementedError("ex06 is not started: write ddpm_posterior_step (taught in notebook 04, "
                              "samplers)")
