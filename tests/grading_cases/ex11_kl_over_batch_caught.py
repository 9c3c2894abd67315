"""ex11 caught: sums the KL over the whole batch (one scalar instead of (B,)); z is right."""
import torch


def vae_latent(mean, logvar, noise):
    return mean + torch.exp(0.5 * logvar) * noise, 0.5 * (mean ** 2 + logvar.exp() - 1 - logvar).sum()
