"""ex04 full: frequencies from a power of 10000 instead of exp(log)."""
import torch


def timestep_embedding(t, dim):
    half = dim // 2
    freqs = 10000.0 ** (-torch.arange(half, dtype=torch.float64) / half)
    args = t.double()[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], dim=1).float()
