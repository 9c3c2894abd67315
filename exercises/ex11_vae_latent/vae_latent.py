"""Exercise 11: the VAE's reparameterisation trick and its KL term.

Taught in notebook 07 (latent diffusion). Grade it with: python -m minidiff grade --only ex11
Write it with torch only: minidiff is the answer key, and it cannot be imported while grading.
"""

import torch
from torch import Tensor


def vae_latent(mean: Tensor, logvar: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
    """Sample a latent from the encoder's Gaussian and measure how far it is from N(0, I).

    The encoder gives a Gaussian per latent element, with mean ``mean`` and variance exp(logvar)
    (Kingma & Welling 2014).
    1. Reparameterise: z = mean + std * noise with std = exp(logvar / 2), so that z is differentiable
       in mean and logvar (sec. 2.4).
    2. KL(N(mean, exp(logvar)) || N(0, 1)) in closed form (appendix B), summed over every element of
       a sample: kl = 0.5 * sum(mean^2 + exp(logvar) - 1 - logvar).

    Args:
        mean: (B, ...) latent means, float32 or float64.
        logvar: (B, ...) log-variances, same shape and dtype.
        noise: (B, ...) standard normal noise, same shape and dtype.

    Returns:
        (z, kl): z (B, ...) with mean's shape and dtype; kl (B,), one value per sample.
    """
    raise NotImplementedError("ex11 is not started: write vae_latent (taught in notebook 07, latent "
                              "diffusion)")
