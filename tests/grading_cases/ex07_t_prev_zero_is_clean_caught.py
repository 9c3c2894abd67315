"""ex07 caught: treats t_prev = 0 as the clean end, which used to score 10/10 (no case stepped to 0)."""
import math


def ddim_step(xt, t, t_prev, eps_pred, alpha_bar):
    ab_t = float(alpha_bar[t])
    ab_prev = float(alpha_bar[t_prev]) if t_prev > 0 else 1.0
    x0_pred = (xt - math.sqrt(1 - ab_t) * eps_pred) / math.sqrt(ab_t)
    return math.sqrt(ab_prev) * x0_pred + math.sqrt(1 - ab_prev) * eps_pred
