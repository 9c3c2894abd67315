"""ex11 full: torch.distributions' rsample-style z and its closed-form KL, in another arrangement."""
import torch


def vae_latent(mean, logvar, noise):
    std = torch.sqrt(torch.exp(logvar))
    z = torch.addcmul(mean, std, noise)
    kl = -0.5 * (1 + logvar - mean * mean - logvar.exp())
    return z, kl.sum(dim=tuple(range(1, mean.ndim)))
