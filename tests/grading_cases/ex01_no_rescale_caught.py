"""ex01 caught: the betas of T = 1000 for every T (minidiff rescales them by 1000 / T)."""
import torch


def alpha_bar_linear(T):
    return torch.cumprod(1 - torch.linspace(1e-4, 0.02, T, dtype=torch.float64), 0)
