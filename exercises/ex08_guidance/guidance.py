"""Exercise 08: classifier-free guidance, the knob that makes images follow the prompt.

Taught in notebook 06 (conditioning and guidance). Grade it with: python -m minidiff grade --only ex08
Write it with torch only: minidiff is the answer key, and it cannot be imported while grading.
"""

import torch
from torch import Tensor


def cfg_combine(eps_uncond: Tensor, eps_cond: Tensor, guidance_scale: float) -> Tensor:
    """Combine the two noise predictions of classifier-free guidance (Ho & Salimans 2022, eq. 6).

    guidance_scale is w in eps_uncond + w * (eps_cond - eps_uncond): w = 0 ignores the prompt,
    w = 1 is the plain conditional prediction, w > 1 pushes further in the prompt's direction.

    Args:
        eps_uncond: (B, ...) prediction with the empty prompt.
        eps_cond: (B, ...) prediction with the prompt.
        guidance_scale: w >= 0.

    Returns:
        (B, ...) guided prediction, same shape and dtype as eps_cond.
    """
    raise NotImplementedError("ex08 is not started: write cfg_combine "
                              "(taught in notebook 06, conditioning and guidance)")
