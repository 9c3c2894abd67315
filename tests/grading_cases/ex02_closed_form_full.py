"""ex02 full: the closed form f(t + 1) / f(0), clipped through the betas."""
import math

import torch


def alpha_bar_cosine(T):
    u = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
    ratio = f[1:] / f[:-1]
    return torch.exp(torch.cumsum(torch.log(torch.clamp(ratio, min=1 - 0.999)), 0))
