"""ex13 caught: always takes the first-order step (DDIM in log-SNR), ignoring x0_pred_last."""
import math


def dpmpp_2m_step(xt, x0_pred, x0_pred_last, alpha_bar_last, alpha_bar_t, alpha_bar_prev):
    if alpha_bar_prev == 1.0:
        return x0_pred
    lam = lambda ab: 0.5 * math.log(ab / (1 - ab))  # noqa: E731
    h = lam(alpha_bar_prev) - lam(alpha_bar_t)
    ratio = math.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar_t))
    return ratio * xt - math.sqrt(alpha_bar_prev) * math.expm1(-h) * x0_pred
