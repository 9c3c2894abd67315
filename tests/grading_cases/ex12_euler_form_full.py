"""ex12 full: the DDIM loop as Euler's method in variance-exploding coordinates (Karras et al. 2022)."""
import math

import torch


def ddim_sample(model, x_T, alpha_bar, steps):
    T = len(alpha_bar)
    plan = [round(T - i * T / steps) - 1 for i in range(steps)]
    x = x_T
    for t, t_prev in zip(plan, plan[1:] + [-1]):
        ab_t = alpha_bar[t].item()
        ab_prev = alpha_bar[t_prev].item() if t_prev >= 0 else 1.0
        eps = model(x, torch.full((x.shape[0],), t, dtype=torch.long), None)
        sigma_t, sigma_prev = math.sqrt((1 - ab_t) / ab_t), math.sqrt((1 - ab_prev) / ab_prev)
        x = (x / math.sqrt(ab_t) + (sigma_prev - sigma_t) * eps) * math.sqrt(ab_prev)
    return x
