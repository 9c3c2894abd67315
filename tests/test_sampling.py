"""Samplers against the exact denoiser of a Gaussian mixture: no training, known answers."""

import math

import pytest
import torch

from minidiff.guidance import cfg, cfg_combine
from minidiff.sampling import (
    SAMPLERS,
    ddim_invert,
    ddim_step,
    ddpm_step,
    dpmpp_2m_step,
    euler_step,
    exponential_step,
    heun_step,
    make_timesteps,
    model_evaluations,
    sample,
)
from minidiff.schedule import make_schedule, q_posterior
from minidiff.toy2d import AnalyticDenoiser, GaussianMixture

SCHEDULE = make_schedule("cosine", 1000)


def mixture() -> GaussianMixture:
    return GaussianMixture(
        torch.tensor([0.3, 0.7], dtype=torch.float64),
        torch.tensor([[-2.0, 0.0], [1.5, 1.0]], dtype=torch.float64),
        torch.stack([0.3 * torch.eye(2), torch.tensor([[0.5, 0.2], [0.2, 0.4]])]).double(),
    )


def noise(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_reproduces_the_data_distribution(sampler):
    mix, n = mixture(), 20_000
    x = sample(AnalyticDenoiser(mix, SCHEDULE), noise(n), SCHEDULE, 50, sampler,
               generator=torch.Generator().manual_seed(1))
    # Monte Carlo standard error of the mean is about sqrt(2.9 / n) = 0.012; of a covariance entry about 0.03
    assert torch.allclose(x.mean(0), mix.mean, atol=0.06)
    assert torch.allclose(torch.cov(x.T), mix.cov, atol=0.15)


def test_gaussian_data_gets_exact_mean_and_covariance():
    g = GaussianMixture(torch.ones(1, dtype=torch.float64), torch.tensor([[1.0, -1.0]], dtype=torch.float64),
                        torch.tensor([[[2.0, 0.5], [0.5, 1.0]]], dtype=torch.float64))
    x = sample(AnalyticDenoiser(g, SCHEDULE), noise(20_000), SCHEDULE, 100, "dpmpp_2m")
    assert torch.allclose(x.mean(0), g.mean, atol=0.05)
    assert torch.allclose(torch.cov(x.T), g.cov, atol=0.1)


def test_ddim_eta0_is_deterministic_and_stochastic_samplers_follow_the_generator():
    model = AnalyticDenoiser(mixture(), SCHEDULE)
    a = sample(model, noise(100), SCHEDULE, 20, "ddim", generator=torch.Generator().manual_seed(5))
    b = sample(model, noise(100), SCHEDULE, 20, "ddim", generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b)
    c = sample(model, noise(100), SCHEDULE, 20, "ddpm", generator=torch.Generator().manual_seed(5))
    d = sample(model, noise(100), SCHEDULE, 20, "ddpm", generator=torch.Generator().manual_seed(5))
    e = sample(model, noise(100), SCHEDULE, 20, "ddpm", generator=torch.Generator().manual_seed(6))
    assert torch.equal(c, d) and not torch.equal(c, e)


def test_ddim_inversion_recovers_the_noise_and_improves_with_steps():
    model = AnalyticDenoiser(mixture(), SCHEDULE)
    z = noise(200)
    errors = []
    for steps in (50, 200):
        x0 = sample(model, z, SCHEDULE, steps, "ddim")
        errors.append((ddim_invert(model, x0, SCHEDULE, steps) - z).abs().mean().item())
    assert errors[1] < 0.02 and errors[1] < errors[0] / 2


def test_ddim_with_eta0_is_eulers_method_in_sigma():
    model = AnalyticDenoiser(mixture(), SCHEDULE)
    assert torch.allclose(sample(model, noise(50), SCHEDULE, 10, "ddim"),
                          sample(model, noise(50), SCHEDULE, 10, "euler"), atol=1e-9)


@pytest.mark.parametrize("sampler,order", [("ddim", 1), ("euler", 1), ("heun", 2), ("dpmpp_2m", 2)])
def test_convergence_order(sampler, order):
    """Halving the step size divides the ODE error by about 2**order (measured 1.0 and 1.6-1.8)."""
    model, z = AnalyticDenoiser(mixture(), SCHEDULE), noise(200)
    reference = sample(model, z, SCHEDULE, 1000, "heun")
    errs = [(sample(model, z, SCHEDULE, n, sampler) - reference).norm(dim=1).mean().item()
            for n in (10, 20, 40)]
    rates = [math.log2(errs[i] / errs[i + 1]) for i in range(2)]
    if order == 1:
        assert all(0.8 < r < 1.2 for r in rates), rates
    else:
        assert all(1.5 < r < 2.5 for r in rates), rates


def test_callback_sees_every_step_and_heun_counts_twice():
    model = AnalyticDenoiser(mixture(), SCHEDULE)
    seen = []
    calls = []

    def counting(xt, t, cond):
        calls.append(int(t[0]))
        return model(xt, t, cond)

    counting.prediction_type = "x0"
    sample(counting, noise(4), SCHEDULE, 7, "heun",
           callback=lambda i, t, xt, x0, eps: seen.append((i, t, xt.shape, x0.shape, eps.shape)))
    assert [s[0] for s in seen] == list(range(7))
    assert [s[1] for s in seen] == make_timesteps(1000, 7, "trailing").tolist()
    assert all(s[2] == s[3] == s[4] == (4, 2) for s in seen)
    assert len(calls) == model_evaluations("heun", 7) == 13


def test_timestep_spacings():
    assert make_timesteps(1000, 4, "leading").tolist() == [750, 500, 250, 0]
    assert make_timesteps(1000, 4, "trailing").tolist() == [999, 749, 499, 249]
    assert make_timesteps(1000, 4, "linspace").tolist() == [999, 666, 333, 0]
    assert make_timesteps(10, 10, "trailing").tolist() == list(range(9, -1, -1))
    with pytest.raises(ValueError, match="steps=0"):
        make_timesteps(1000, 0)
    with pytest.raises(ValueError, match="steps=1001"):
        make_timesteps(1000, 1001)
    with pytest.raises(ValueError, match="spacing='middle'"):
        make_timesteps(1000, 10, "middle")


def test_bad_sampler_and_eta():
    model = AnalyticDenoiser(mixture(), SCHEDULE)
    with pytest.raises(ValueError, match="sampler='plms'.*ddim"):
        sample(model, noise(2), SCHEDULE, 5, "plms")
    with pytest.raises(ValueError, match="eta=-1"):
        sample(model, noise(2), SCHEDULE, 5, "ddim", eta=-1)


class LinearCond:
    """eps = a * cond: guidance must give uncond + w (cond - uncond) exactly."""

    prediction_type = "eps"

    def __call__(self, xt, t, cond):
        return 0 * xt + cond[:, :1, 0].expand_as(xt)


def test_guidance_formula_and_scales():
    model = LinearCond()
    xt, t = torch.zeros(3, 2), torch.zeros(3, dtype=torch.long)
    cond, uncond = torch.full((3, 4, 8), 2.0), torch.full((1, 4, 8), 0.5)
    for w in (0.0, 1.0, 7.5):
        assert torch.allclose(cfg(model, w, uncond)(xt, t, cond), torch.full((3, 2), 0.5 + w * 1.5))
        guided = cfg_combine(torch.full((2,), 0.5), torch.full((2,), 2.0), w)
        assert torch.equal(guided, torch.full((2,), 0.5 + w * 1.5))  # exact in binary: 0.5 + w 1.5
    assert cfg(model, 1.0, uncond) is model  # scale 1 is the conditional model: no second branch to run
    with pytest.raises(ValueError, match="guidance_scale=-1"):
        cfg(model, -1, uncond)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_guidance_works_with_every_sampler(sampler):
    """Two-class mixture: cond picks a component; scale 1 reproduces the conditional, 0 the unconditional."""
    mix = mixture()
    comps = [GaussianMixture(torch.ones(1, dtype=torch.float64), mix.means[k:k + 1], mix.covs[k:k + 1])
             for k in (0, 1)]

    class ClassModel:
        prediction_type = "x0"

        def __call__(self, xt, t, cond):
            k = cond[:, 0, 0].long()  # 0, 1 = components, 2 = unconditional
            out = AnalyticDenoiser(mix, SCHEDULE)(xt, t)
            for c in (0, 1):
                out = torch.where((k == c)[:, None], AnalyticDenoiser(comps[c], SCHEDULE)(xt, t), out)
            return out

    n = 4000
    cond = torch.ones(n, 1, 1, dtype=torch.float64)
    uncond = torch.full((1, 1, 1), 2.0, dtype=torch.float64)
    x = sample(cfg(ClassModel(), 1.0, uncond), noise(n), SCHEDULE, 30, sampler, cond=cond,
               generator=torch.Generator().manual_seed(0))
    assert torch.allclose(x.mean(0), mix.means[1], atol=0.08)
    x = sample(cfg(ClassModel(), 0.0, uncond), noise(n), SCHEDULE, 30, sampler, cond=cond,
               generator=torch.Generator().manual_seed(0))
    assert torch.allclose(x.mean(0), mix.mean, atol=0.1)


def test_every_deterministic_step_is_exact_on_a_point_mass():
    """Data at one point c: the ODE keeps eps fixed, so a_t c + s_t eps must step to a_prev c + s_prev eps."""
    c, eps = torch.tensor([[1.5, -0.5]], dtype=torch.float64), torch.tensor([[0.3, 2.0]], dtype=torch.float64)
    ab = SCHEDULE.alpha_bar.tolist()
    for t, t_prev, t_last in ((999, 700, None), (600, 400, 800), (50, 10, 90)):
        ab_t, ab_prev = ab[t], ab[t_prev]
        xt = math.sqrt(ab_t) * c + math.sqrt(1 - ab_t) * eps
        exact = math.sqrt(ab_prev) * c + math.sqrt(1 - ab_prev) * eps
        steps = {
            "ddim": ddim_step(c, eps, ab_t, ab_prev, 0.0, None),
            "euler": euler_step(xt, eps, ab_t, ab_prev),
            "exponential": exponential_step(xt, c, ab_t, ab_prev),
            "heun": heun_step(xt, c, c, ab_t, ab_prev),
            "dpmpp_2m": dpmpp_2m_step(xt, c, None if t_last is None else c, ab[t_last or 0], ab_t, ab_prev),
        }
        for name, x in steps.items():
            assert torch.allclose(x, exact, rtol=0, atol=1e-9), (name, t)
    assert torch.equal(dpmpp_2m_step(xt, c, c, ab[90], ab[50], 1.0), c)  # the final jump lands on x0_pred


def test_ddpm_step_samples_the_posterior_and_ddim_eta_adds_its_variance():
    x0, xt = torch.tensor([[0.7, -1.0]], dtype=torch.float64), torch.tensor([[0.2, 0.4]], dtype=torch.float64)
    noise, t = torch.tensor([[1.0, -2.0]], dtype=torch.float64), 400
    mean, var = q_posterior(SCHEDULE, x0, xt, torch.tensor([t]))
    ab_t, ab_prev = SCHEDULE.alpha_bar[t].item(), SCHEDULE.alpha_bar[t - 1].item()
    assert torch.allclose(ddpm_step(xt, x0, ab_t, ab_prev, noise), mean + var.sqrt() * noise, atol=1e-12)
    assert torch.equal(ddpm_step(xt, x0, ab_t, 1.0, noise), x0)  # the clean end: no noise
    per_sample = ddpm_step(xt, x0, torch.tensor([[ab_t]]), torch.tensor([[ab_prev]]), noise)  # (B, 1) levels
    assert torch.allclose(per_sample, mean + var.sqrt() * noise, atol=1e-12)
    # eta = 1: the variance of Song et al. eq. 16 is the posterior's (Ho et al. eq. 7)
    eps = (xt - math.sqrt(ab_t) * x0) / math.sqrt(1 - ab_t)
    zero = torch.zeros_like(x0)
    spread = ddim_step(x0, eps, ab_t, ab_prev, 1.0, noise) - ddim_step(x0, eps, ab_t, ab_prev, 1.0, zero)
    assert torch.allclose(spread, var.sqrt() * noise, atol=1e-12)
