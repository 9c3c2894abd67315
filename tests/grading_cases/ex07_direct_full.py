"""ex07 full: one line from xt and eps_pred, without forming x0_pred first."""
import math


def ddim_step(xt, t, t_prev, eps_pred, alpha_bar):
    ab_t = alpha_bar[t].item()
    ab_prev = alpha_bar[t_prev].item() if t_prev >= 0 else 1.0
    c_eps = math.sqrt(1 - ab_prev) - math.sqrt(ab_prev * (1 - ab_t) / ab_t)
    return math.sqrt(ab_prev / ab_t) * xt + c_eps * eps_pred
