"""The forward process against its closed forms and a Monte Carlo run of single steps."""

import math

import pytest
import torch

from minidiff.schedule import (
    SCHEDULES,
    log_snr_from_alpha_bar,
    make_schedule,
    predict_eps,
    predict_x0,
    q_posterior,
    q_sample,
    score_from_eps,
    sigma_from_alpha_bar,
    training_target,
    velocity,
)


def test_linear_betas_match_ho_et_al():
    s = make_schedule("linear", 1000)
    assert s.betas[0].item() == pytest.approx(1e-4)
    assert s.betas[-1].item() == pytest.approx(0.02)
    assert s.alpha_bar[-1].item() == pytest.approx(math.prod(1 - b for b in s.betas.tolist()), rel=1e-9)


def test_cosine_alpha_bar_is_the_closed_form():
    T, c = 1000, 0.008
    s = make_schedule("cosine", T)
    f = lambda u: math.cos((u / T + c) / (1 + c) * math.pi / 2) ** 2  # noqa: E731
    for t in (0, 10, 500, 900):
        assert s.alpha_bar[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-9)


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("T", [1, 10, 1000])
def test_derived_quantities(name, T):
    s = make_schedule(name, T)
    ab = s.alpha_bar
    assert s.betas.shape == (T,) and (s.betas > 0).all() and (s.betas < 1).all()
    assert torch.allclose(s.alphas, 1 - s.betas)
    assert torch.allclose(ab, torch.cumprod(1 - s.betas, 0))
    assert torch.allclose(s.sigma, ((1 - ab) / ab).sqrt())
    assert torch.allclose(s.snr, ab / (1 - ab))
    assert torch.allclose(s.log_snr, torch.log(ab / (1 - ab)))
    assert (ab[1:] < ab[:-1]).all()  # noise only grows


def test_bad_schedule_inputs_name_what_is_allowed():
    with pytest.raises(ValueError, match="schedule='quadratic'.*linear"):
        make_schedule("quadratic")
    with pytest.raises(ValueError, match="T=0"):
        make_schedule("cosine", 0)
    s = make_schedule("cosine", 10)
    with pytest.raises(ValueError, match=r"t must lie in 0..9"):
        q_sample(s, torch.zeros(2, 3), torch.tensor([0, 10]), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="noise has shape"):
        q_sample(s, torch.zeros(2, 3), torch.tensor([0, 1]), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="prediction_type='score'"):
        predict_x0(s, torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0, 1]), "score")


def test_q_sample_closed_form_broadcasts_per_sample():
    s = make_schedule("linear", 100)
    x0, noise = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    t = torch.tensor([5, 70])
    xt = q_sample(s, x0, t, noise)
    for i in range(2):
        ab = s.alpha_bar[t[i]].float()
        assert torch.allclose(xt[i], ab.sqrt() * x0[i] + (1 - ab).sqrt() * noise[i], atol=1e-6)


@pytest.mark.parametrize("name", SCHEDULES)
def test_q_sample_equals_t_single_steps_monte_carlo(name):
    """Apply q(x_t | x_{t-1}) = N(sqrt(alpha_t) x_{t-1}, beta_t) T times; compare mean and variance."""
    T, n = 50, 200_000
    s = make_schedule(name, T)
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((n,), 1.5, dtype=torch.float64)
    x = x0.clone()
    for t in range(T):
        x = s.alphas[t].sqrt() * x + s.betas[t].sqrt() * torch.randn(n, generator=g, dtype=torch.float64)
    t_last = torch.full((n,), T - 1)
    closed = q_sample(s, x0, t_last, torch.randn(n, generator=g, dtype=torch.float64))
    ab = s.alpha_bar[-1].item()
    # standard errors: mean se = sqrt(var / n) ~ 0.0022; we allow 5 se
    assert x.mean().item() == pytest.approx(math.sqrt(ab) * 1.5, abs=5 * math.sqrt(1 / n))
    assert x.var().item() == pytest.approx(1 - ab, abs=5 * math.sqrt(2 / n))
    assert closed.mean().item() == pytest.approx(x.mean().item(), abs=10 * math.sqrt(1 / n))
    assert closed.var().item() == pytest.approx(x.var().item(), abs=10 * math.sqrt(2 / n))


def test_posterior_matches_bayes_rule_by_monte_carlo():
    """Draw x_{t-1} ~ q(x_{t-1}|x0), then x_t; where x_t is near a value, x_{t-1} follows the posterior."""
    s = make_schedule("linear", 100)
    t, n, x0_val = 40, 2_000_000, 0.7
    g = torch.Generator().manual_seed(1)
    x0 = torch.full((n,), x0_val, dtype=torch.float64)
    x_prev = q_sample(s, x0, torch.full((n,), t - 1), torch.randn(n, generator=g, dtype=torch.float64))
    xt = s.alphas[t].sqrt() * x_prev + s.betas[t].sqrt() * torch.randn(n, generator=g, dtype=torch.float64)
    target = 0.3
    near = (xt - target).abs() < 0.01
    mean, var = q_posterior(s, torch.tensor([x0_val], dtype=torch.float64),
                            torch.tensor([target], dtype=torch.float64), torch.tensor([t]))
    assert x_prev[near].mean().item() == pytest.approx(mean.item(), abs=0.01)
    assert x_prev[near].var().item() == pytest.approx(var.item(), rel=0.1)
    with pytest.raises(ValueError, match="t >= 1"):
        q_posterior(s, x0[:1], xt[:1], torch.tensor([0]))


@pytest.mark.parametrize("ptype", ["eps", "x0", "v"])
def test_conversions_invert_each_other(ptype):
    s = make_schedule("cosine", 1000)
    x0, noise = torch.randn(8, 5, dtype=torch.float64), torch.randn(8, 5, dtype=torch.float64)
    t = torch.randint(0, 1000, (8,))
    xt = q_sample(s, x0, t, noise)
    pred = training_target(s, x0, t, noise, ptype)
    assert torch.allclose(predict_x0(s, pred, xt, t, ptype), x0, atol=1e-6)
    assert torch.allclose(predict_eps(s, pred, xt, t, ptype), noise, atol=1e-6)


def test_velocity_and_score_closed_forms():
    s = make_schedule("cosine", 1000)
    x0, noise, t = torch.tensor([[2.0]]), torch.tensor([[-1.0]]), torch.tensor([500])
    ab = s.alpha_bar[500].item()
    v = math.sqrt(ab) * -1.0 - math.sqrt(1 - ab) * 2.0
    assert velocity(s, x0, t, noise).item() == pytest.approx(v, rel=1e-5)
    # for x0 fixed, q(xt|x0) is Gaussian: its score is -(xt - sqrt(ab) x0) / (1 - ab) = -eps / sqrt(1 - ab)
    xt = q_sample(s, x0, t, noise)
    exact = -(xt - math.sqrt(ab) * x0) / (1 - ab)
    assert torch.allclose(score_from_eps(s, noise, t), exact, atol=1e-5)


def test_sigma_and_log_snr_of_one_alpha_bar():
    """alpha_bar = 0.2: sigma = sqrt(0.8 / 0.2) = 2 and log-SNR = log(0.25); alpha_bar = 0.5: log-SNR = 0."""
    assert sigma_from_alpha_bar(0.2) == pytest.approx(2.0, rel=1e-15)
    assert log_snr_from_alpha_bar(0.2) == pytest.approx(math.log(0.25), rel=1e-15)
    assert log_snr_from_alpha_bar(0.5) == 0.0 and sigma_from_alpha_bar(1.0) == 0.0
    s = make_schedule("cosine", 100)
    assert torch.equal(s.sigma, sigma_from_alpha_bar(s.alpha_bar))
    assert s.log_snr[40].item() == pytest.approx(log_snr_from_alpha_bar(s.alpha_bar[40].item()), rel=1e-12)
