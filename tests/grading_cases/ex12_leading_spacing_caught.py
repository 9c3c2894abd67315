"""ex12 caught: plans 'leading' timesteps (0, k, 2k, ...), which never start from pure noise."""
import math

import torch


def ddim_sample(model, x_T, alpha_bar, steps):
    k = len(alpha_bar) // steps
    plan = [i * k for i in range(steps)][::-1]
    x = x_T
    for t, t_prev in zip(plan, plan[1:] + [-1]):
        ab_t, ab_prev = float(alpha_bar[t]), float(alpha_bar[t_prev]) if t_prev >= 0 else 1.0
        eps = model(x, torch.full((len(x),), t), None)
        x0 = (x - math.sqrt(1 - ab_t) * eps) / math.sqrt(ab_t)
        x = math.sqrt(ab_prev) * x0 + math.sqrt(1 - ab_prev) * eps
    return x
