"""ex07 zero: never returns; the time limit ends it."""


def ddim_step(xt, t, t_prev, eps_pred, alpha_bar):
    while True:
        pass
