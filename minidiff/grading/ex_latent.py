"""Exercise on the VAE of latent diffusion: ex11 the reparameterisation trick and the KL term."""

from __future__ import annotations

import torch
from torch import Tensor

from minidiff.grading import references as ref
from minidiff.grading.spec import Case, Exercise, Inputs, Variant, randn

NOTEBOOK = "notebook 07 (latent diffusion)"
LOGVAR_SPREAD = 1.5  # logvar ~ N(0, 1.5^2): variances from about e^-4 to e^4, as an encoder's early on
FLOAT64_TOL = (1e-12, 1e-10)  # float64 inputs: agreement to about float64 round-off
STD_HINT = "the standard deviation is exp(logvar / 2) = sqrt(exp(logvar)): logvar is the log of the variance"
Z, KL = 0, 1  # the elements of the returned (z, kl)

# ex11 --------------------------------------------------------------------------------------------


def _latent_inputs(g: torch.Generator, *shape: int, dtype: torch.dtype = torch.float32,
                   standard: bool = False) -> Inputs:
    mean, logvar = randn(g, *shape, dtype=dtype), LOGVAR_SPREAD * randn(g, *shape, dtype=dtype)
    if standard:
        mean, logvar = torch.zeros_like(mean), torch.zeros_like(logvar)
    return dict(mean=mean, logvar=logvar, noise=randn(g, *shape, dtype=dtype))


def _kl_closed_form(inputs: Inputs) -> Tensor:
    """KL(N(mean, exp(logvar)) || N(0, 1)) from torch.distributions, summed per sample: (B,)."""
    q = torch.distributions.Normal(inputs["mean"], torch.exp(0.5 * inputs["logvar"]))
    p = torch.distributions.Normal(torch.zeros_like(inputs["mean"]), torch.ones_like(inputs["mean"]))
    return torch.distributions.kl_divergence(q, p).flatten(1).sum(1)  # (B,)


def _latent(std: str = "exp_half", kl_sign: float = 1.0, kl_half: bool = True, reduce: str = "sample",
            kl_var: str = "exp"):
    def variant(mean: Tensor, logvar: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
        sigma = {"exp_half": torch.exp(0.5 * logvar), "logvar": logvar, "exp": torch.exp(logvar),
                 "none": torch.zeros_like(logvar)}[std]
        var = logvar.exp() if kl_var == "exp" else logvar.exp().sqrt()
        terms = kl_sign * (0.5 if kl_half else 1.0) * (mean.pow(2) + var - 1.0 - logvar)  # (B, ...)
        per_sample = terms.flatten(1)  # (B, n)
        kl = {"sample": per_sample.sum(1), "batch": terms.sum(), "mean": per_sample.mean(1)}[reduce]
        return mean + sigma * noise, kl
    return variant


EX11 = Exercise(
    id="ex11", topic="vae_latent", title="VAE reparameterisation, KL", function="vae_latent",
    notebook=NOTEBOOK, reference=ref.vae_latent,
    cases=(
        Case("z = mean + std * noise for latents (4, 4, 4, 4)", 2, lambda g: _latent_inputs(g, 4, 4, 4, 4),
             output=Z),
        Case("the KL term per sample, latents (4, 4, 4, 4)", 3, lambda g: _latent_inputs(g, 4, 4, 4, 4),
             output=KL),
        Case("the KL term equals torch.distributions' closed form, latents (3, 2, 8, 8)", 2,
             lambda g: _latent_inputs(g, 3, 2, 8, 8), expected=_kl_closed_form, output=KL),
        Case("mean = 0, logvar = 0: the KL term is 0", 1,
             lambda g: _latent_inputs(g, 2, 3, 4, 4, standard=True), output=KL),
        Case("batch size 1, flat latents (1, 8): a KL of shape (1,)", 1, lambda g: _latent_inputs(g, 1, 8),
             output=KL),
        Case("float64 latents give a float64 z", 1,
             lambda g: _latent_inputs(g, 2, 4, 4, 4, dtype=torch.float64), tol=FLOAT64_TOL, output=Z),
    ),
    variants=(
        Variant("zeros", lambda mean, logvar, noise: (torch.zeros_like(mean), torch.zeros(len(mean))),
                "you return zeros"),
        Variant("no_noise", _latent(std="none"),
                "z = mean + std * noise: without the noise the decoder never sees a sample"),
        Variant("std_is_logvar", _latent(std="logvar"), STD_HINT),
        Variant("std_is_variance", _latent(std="exp"), STD_HINT),
        Variant("kl_sign", _latent(kl_sign=-1.0),
                "KL = 0.5 * sum(mean^2 + exp(logvar) - 1 - logvar): it is never negative; check the sign"),
        Variant("kl_no_half", _latent(kl_half=False),
                "KL = 0.5 * sum(mean^2 + exp(logvar) - 1 - logvar): the factor 1/2 is part of it"),
        Variant("kl_std_for_variance", _latent(kl_var="std"),
                "the KL term has the variance exp(logvar), not the standard deviation"),
        Variant("kl_over_batch", _latent(reduce="batch"),
                "sum over every dimension but the batch: one KL per sample, shape (B,)"),
        Variant("kl_mean", _latent(reduce="mean"),
                "sum the KL over a sample's elements (a KL between whole distributions), don't average"),
    ),
    error_hints=((r"not enough values to unpack|too many values", "return the pair (z, kl)"),),
)

EXERCISES = (EX11,)
