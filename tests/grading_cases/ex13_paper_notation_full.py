"""ex13 full: Lu et al.'s alg. 2 in the paper's alpha_t, sigma_t notation, with torch.exp and no expm1."""
import math


def dpmpp_2m_step(xt, x0_pred, x0_pred_last, alpha_bar_last, alpha_bar_t, alpha_bar_prev):
    if alpha_bar_prev >= 1.0:
        return x0_pred

    def alpha_sigma_lambda(ab):
        alpha, sigma = math.sqrt(ab), math.sqrt(1 - ab)
        return alpha, sigma, math.log(alpha / sigma)

    a_s, s_s, l_s = alpha_sigma_lambda(alpha_bar_t)
    a_p, s_p, l_p = alpha_sigma_lambda(alpha_bar_prev)
    h = l_p - l_s
    if x0_pred_last is None:
        d = x0_pred
    else:
        h_last = l_s - alpha_sigma_lambda(alpha_bar_last)[2]
        r = h_last / h
        d = x0_pred + (x0_pred - x0_pred_last) / (2 * r)
    return (s_p / s_s) * xt + a_p * (1 - math.exp(-h)) * d
