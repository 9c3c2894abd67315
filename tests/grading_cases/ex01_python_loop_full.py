"""ex01 full: a plain Python loop with math, not torch.cumprod."""
import torch


def alpha_bar_linear(T):
    scale = 1000 / T
    lo, hi = 1e-4 * scale, 0.02 * scale
    values, running = [], 1.0
    for t in range(T):
        beta = lo + (hi - lo) * t / (T - 1) if T > 1 else lo
        running *= 1 - min(beta, 0.999)
        values.append(running)
    return torch.tensor(values, dtype=torch.float64)
