"""ex12 caught: the last step goes to t = 0 instead of the clean end, so a little noise stays in."""
import math

import torch


def ddim_sample(model, x_T, alpha_bar, steps):
    T = len(alpha_bar)
    plan = [round(T - i * T / steps) - 1 for i in range(steps)]
    x = x_T
    for t, t_prev in zip(plan, plan[1:] + [0]):
        ab_t, ab_prev = float(alpha_bar[t]), float(alpha_bar[t_prev])
        eps = model(x, torch.full((len(x),), t), None)
        x0 = (x - math.sqrt(1 - ab_t) * eps) / math.sqrt(ab_t)
        x = math.sqrt(ab_prev) * x0 + math.sqrt(1 - ab_prev) * eps
    return x
