"""Diffusion in 2-D: point datasets, an analytic denoiser, an MLP denoiser, and a tiny GAN beside it."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minidiff.layers import timestep_embedding
from minidiff.sampling import Model, sample
from minidiff.schedule import PREDICTION_TYPES, NoiseSchedule, gather, make_schedule


@dataclass
class GaussianMixture:
    """A mixture of Gaussians in D dimensions: weights (K,), means (K, D), covs (K, D, D)."""

    weights: Tensor
    means: Tensor
    covs: Tensor

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw n points (n, D)."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)  # (n,)
        z = torch.randn(n, self.means.shape[1], generator=generator, dtype=self.means.dtype)  # (n, D)
        chol = torch.linalg.cholesky(self.covs)  # (K, D, D)
        return self.means[k] + torch.einsum("nij,nj->ni", chol[k], z)

    @property
    def mean(self) -> Tensor:
        """Mixture mean (D,)."""
        return (self.weights[:, None] * self.means).sum(0)

    @property
    def cov(self) -> Tensor:
        """Mixture covariance (D, D): E[cov_k] + Cov[mean_k]."""
        d = self.means - self.mean  # (K, D)
        return (self.weights[:, None, None] * (self.covs + d[:, :, None] * d[:, None, :])).sum(0)


class AnalyticDenoiser:
    """The exact E[x0 | xt] for Gaussian-mixture data: the ideal denoiser, no training needed.

    With xt = a x0 + s eps (a = sqrt(alpha_bar), s = sqrt(1 - alpha_bar)), each component k gives
    xt ~ N(a mu_k, a^2 S_k + s^2 I) and E[x0 | xt, k] = mu_k + a S_k (a^2 S_k + s^2 I)^-1 (xt - a mu_k)
    (Gaussian conditioning, Bishop 2006 eq. 2.116); the answer mixes these with the posterior
    responsibilities of each component. It predicts x0, so samplers exercise the x0 -> eps conversion.
    """

    prediction_type = "x0"

    def __init__(self, mixture: GaussianMixture, schedule: NoiseSchedule) -> None:
        self.mixture = mixture
        self.schedule = schedule

    def __call__(self, xt: Tensor, t: Tensor, cond: object = None) -> Tensor:
        """xt: (B, D), t: (B,) -> x0 prediction (B, D)."""
        m = self.mixture
        x = xt.to(torch.float64)
        ab = gather(self.schedule.alpha_bar, t, x)  # (B, 1)
        a, s2 = ab.sqrt()[:, :, None, None], (1 - ab)[:, :, None, None]  # (B, 1, 1, 1)
        eye = torch.eye(x.shape[1], dtype=x.dtype)
        # 1. marginal covariance of xt under each component: (B, K, D, D)
        cov_t = a**2 * m.covs[None] + s2 * eye
        diff = x[:, None, :] - a[:, :, :, 0] * m.means[None]  # (B, K, D)
        sol = torch.linalg.solve(cov_t, diff[..., None])[..., 0]  # (B, K, D)
        # 2. responsibilities p(k | xt) from the Gaussian log-densities
        logdet = torch.linalg.slogdet(cov_t).logabsdet  # (B, K)
        logp = torch.log(m.weights)[None] - 0.5 * (logdet + (diff * sol).sum(-1))  # (B, K)
        resp = torch.softmax(logp, dim=1)  # (B, K)
        # 3. per-component posterior means, mixed by responsibility
        x0_k = m.means[None] + a[:, :, :, 0] * torch.einsum("kij,bkj->bki", m.covs, sol)  # (B, K, D)
        return (resp[..., None] * x0_k).sum(1).to(xt.dtype)


# ---------------------------------------------------------------------------------------------
# 2-D datasets
# ---------------------------------------------------------------------------------------------

DATASETS = ("moons", "rings", "gaussians8", "spiral")
RING_RADIUS, RING_STD = 2.0, 0.02  # the 8-Gaussian ring of Metz et al. 2017 and Srivastava et al. 2017
N_MODES = 8
POINT_NOISE = 0.05  # std of the jitter added to moons, rings and spiral
RING_RADII = (0.8, 1.8)  # the two concentric rings
SPIRAL_TURNS = 1.5  # turns of the spiral: angle runs over 1.5 pi .. 4.5 pi (the 2-D Swiss roll)
SPIRAL_SCALE = 1 / 6  # shrinks the spiral to radius < 2.5, like the other datasets

PointsSource = str | Callable[[int, torch.Generator], Tensor]


def eight_gaussians(radius: float = RING_RADIUS, std: float = RING_STD) -> GaussianMixture:
    """Eight equal isotropic Gaussians with std ``std`` whose means sit evenly on a circle of ``radius``."""
    angle = torch.arange(N_MODES, dtype=torch.float64) * 2 * math.pi / N_MODES  # (K,)
    means = radius * torch.stack([angle.cos(), angle.sin()], dim=1)  # (K, 2)
    covs = std**2 * torch.eye(2, dtype=torch.float64).expand(N_MODES, 2, 2).clone()  # (K, 2, 2)
    return GaussianMixture(torch.full((N_MODES,), 1 / N_MODES, dtype=torch.float64), means, covs)


def make_points(name: str, n: int, generator: torch.Generator | None = None) -> Tensor:
    """``n`` points (n, 2) float32 from the 2-D dataset ``name`` (one of DATASETS), within radius ~2.5."""
    if name not in DATASETS:
        raise ValueError(f"dataset={name!r} is not known; choose one of {DATASETS}")
    if name == "gaussians8":
        return eight_gaussians().sample(n, generator).float()
    u = torch.rand(n, generator=generator, dtype=torch.float64)  # (n,) position along the curve
    half = torch.rand(n, generator=generator) < 0.5  # (n,) which of the two parts
    if name == "moons":  # two interleaved half circles, centred and scaled by 1.5
        angle = math.pi * u
        upper = torch.stack([angle.cos(), angle.sin()], dim=1)  # (n, 2)
        lower = torch.stack([1 - angle.cos(), 0.5 - angle.sin()], dim=1)  # (n, 2)
        x = 1.5 * (torch.where(half[:, None], upper, lower) - torch.tensor([0.5, 0.25], dtype=torch.float64))
    elif name == "rings":
        angle = 2 * math.pi * u
        radius = torch.where(half, RING_RADII[0], RING_RADII[1]).double()  # (n,)
        x = radius[:, None] * torch.stack([angle.cos(), angle.sin()], dim=1)  # (n, 2)
    else:  # spiral
        angle = SPIRAL_TURNS * math.pi * (1 + 2 * u)
        x = SPIRAL_SCALE * angle[:, None] * torch.stack([angle.cos(), angle.sin()], dim=1)  # (n, 2)
    x = x + POINT_NOISE * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return x.float()


def _points_fn(dataset: PointsSource) -> Callable[[int, torch.Generator], Tensor]:
    """A dataset name or a callable ``(n, generator) -> (n, 2)``, as a callable."""
    if isinstance(dataset, str):
        if dataset not in DATASETS:
            raise ValueError(f"dataset={dataset!r} is not known; choose one of {DATASETS}")
        return lambda n, generator: make_points(dataset, n, generator)
    if callable(dataset):
        return dataset
    raise ValueError(f"dataset must be one of {DATASETS} or a callable (n, generator) -> (n, 2); "
                     f"got {type(dataset).__name__}")


# ---------------------------------------------------------------------------------------------
# The learned denoiser
# ---------------------------------------------------------------------------------------------

TIME_DIM = 32  # sinusoidal embedding width for timesteps 0..T-1
HIDDEN = 128  # MLP width: enough for these datasets in ~20 s of CPU training
TRAIN_THREADS = 1  # these MLPs are too small to split: 2 threads on 2 busy cores measured 20x slower per step


@contextmanager
def _threads(n: int) -> Iterator[None]:
    """Run the body with n torch threads, then restore the previous count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class MLPDenoiser(nn.Module):
    """An MLP that reads (xt (B, 2), t (B,)) and predicts eps, x0 or v (B, 2).

    The timestep enters as a sinusoidal embedding (Ho et al. 2020, from Vaswani et al. 2017),
    concatenated to the point; three hidden SiLU layers follow.
    """

    def __init__(self, prediction_type: str = "eps", hidden: int = HIDDEN, time_dim: int = TIME_DIM) -> None:
        super().__init__()
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type={prediction_type!r} is not known; "
                             f"choose one of {PREDICTION_TYPES}")
        self.prediction_type = prediction_type
        self.time_dim = time_dim
        self.net = nn.Sequential(
            nn.Linear(2 + time_dim, hidden), nn.SiLU(),
            nn.Linear(hidden, hidden), nn.SiLU(),
            nn.Linear(hidden, hidden), nn.SiLU(),
            nn.Linear(hidden, 2),
        )

    def forward(self, xt: Tensor, t: Tensor, cond: object = None) -> Tensor:
        """xt: (B, 2), t: (B,) integer timesteps; cond must be None (the model is unconditional)."""
        if cond is not None:
            raise ValueError("MLPDenoiser is unconditional; pass cond=None")
        emb = timestep_embedding(t, self.time_dim)  # (B, time_dim)
        return self.net(torch.cat([xt.float(), emb], dim=1)).to(xt.dtype)  # (B, 2)


def train_toy(
    dataset: PointsSource = "gaussians8",
    steps: int = 2000,
    batch_size: int = 512,
    schedule: NoiseSchedule | None = None,
    seed: int = 0,
    lr: float = 1e-2,
    prediction_type: str = "eps",
) -> tuple[MLPDenoiser, list[float]]:
    """Train an MLPDenoiser with the one training loop on fresh points every step; return (model in
    eval mode, loss per step).

    The loss is the simple objective of Ho et al. 2020 (eq. 14) for ``prediction_type``; the
    learning rate decays to 0 (cosine), which sharpens the modes. ``schedule`` defaults to linear,
    T = 1000: cosine ends at alpha_bar = 2.4e-9, where an eps-prediction says almost nothing about x0
    and the first sampling step magnifies its error about 600-fold (Lin et al. 2024); use
    prediction_type="v" there.
    """
    from minidiff.training import Stage, diffusion_loss, fit, step_seed

    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps={steps} and batch_size={batch_size} must both be >= 1")
    schedule = schedule or make_schedule("linear", 1000)
    points = _points_fn(dataset)
    torch.manual_seed(seed)  # initial weights
    model = MLPDenoiser(prediction_type)

    def batch(step: int, rank: int) -> tuple[Tensor, Tensor, Tensor]:
        # a clean batch, a timestep and noise per point (Ho et al. 2020, algorithm 1)
        generator = torch.Generator().manual_seed(step_seed(seed, step))
        x0 = points(batch_size, generator)  # (B, 2)
        t = torch.randint(0, schedule.T, (batch_size,), generator=generator)  # (B,)
        return x0, t, torch.randn(x0.shape, generator=generator)  # noise (B, 2)

    def loss(net: nn.Module, b: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        return diffusion_loss(net, schedule, b[0], b[1], b[2], None, prediction_type)

    stage = Stage("toy", model, loss, batch, steps, lr, batch_size, grad_clip=math.inf, min_lr_share=0.0,
                  seed=seed)
    with _threads(TRAIN_THREADS):
        result = fit(stage, progress=False, device=torch.device("cpu"))
    return model.eval(), result["losses"]


def reverse_trajectory(
    model: Model, n: int, schedule: NoiseSchedule, steps: int = 50, sampler: str = "ddim", seed: int = 0,
) -> tuple[Tensor, list[Tensor]]:
    """Sample n points from pure noise; return (x0 (n, 2), [x_T, ..., x0], steps + 1 tensors (n, 2))."""
    generator = torch.Generator().manual_seed(seed)
    x_T = torch.randn(n, 2, generator=generator)  # (n, 2)
    frames = []
    with torch.no_grad(), _threads(TRAIN_THREADS):
        x0 = sample(model, x_T, schedule, steps, sampler, generator=generator,
                    callback=lambda i, t, xt, x0_pred, eps_pred: frames.append(xt.clone()))
    return x0, frames + [x0]


# ---------------------------------------------------------------------------------------------
# A tiny GAN, for contrast (Goodfellow et al. 2014)
# ---------------------------------------------------------------------------------------------

LATENT_DIM = 2  # generator input size
GAN_HIDDEN = 128
GAN_LR, GAN_BETAS = 1e-3, (0.5, 0.999)  # beta1: DCGAN (Radford et al. 2016); lr 5x theirs, for 2000 steps


class GANGenerator(nn.Module):
    """z (B, LATENT_DIM) ~ N(0, I) -> point (B, 2)."""

    def __init__(self, hidden: int = GAN_HIDDEN) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(LATENT_DIM, hidden), nn.ReLU(),
                                 nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 2))

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n generated points (n, 2)."""
        return self(torch.randn(n, LATENT_DIM, generator=generator))


class GANDiscriminator(nn.Module):
    """point (B, 2) -> logit (B,) that the point is real."""

    def __init__(self, hidden: int = GAN_HIDDEN) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, hidden), nn.LeakyReLU(0.2),
                                 nn.Linear(hidden, hidden), nn.LeakyReLU(0.2),
                                 nn.Linear(hidden, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)[:, 0]


def train_gan(
    points_fn: PointsSource = "gaussians8", steps: int = 2000, seed: int = 0, batch_size: int = 256,
    snapshot_every: int = 0,
) -> tuple[GANGenerator, dict]:
    """Train a GAN, non-saturating loss (Goodfellow et al. 2014, sec. 3): one D, then one G step per step.

    Returns (generator, history) where history has "d_loss" and "g_loss" per step and, when
    ``snapshot_every`` > 0, "snapshots": {step: 1000 generated points (1000, 2)}.
    """
    if steps < 1:
        raise ValueError(f"steps={steps} must be >= 1")
    points = _points_fn(points_fn)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    g, d = GANGenerator(), GANDiscriminator()
    opt_g = torch.optim.Adam(g.parameters(), lr=GAN_LR, betas=GAN_BETAS)
    opt_d = torch.optim.Adam(d.parameters(), lr=GAN_LR, betas=GAN_BETAS)
    history: dict = {"d_loss": [], "g_loss": [], "snapshots": {}}
    with _threads(TRAIN_THREADS):
        for step in range(steps):
            _gan_step(g, d, opt_g, opt_d, points(batch_size, generator), generator, history)
            if snapshot_every and (step + 1) % snapshot_every == 0:
                history["snapshots"][step + 1] = g.sample(1000, torch.Generator().manual_seed(seed))
    return g.eval(), history


def _gan_step(g: GANGenerator, d: GANDiscriminator, opt_g: torch.optim.Optimizer,
              opt_d: torch.optim.Optimizer, real: Tensor, generator: torch.Generator, history: dict) -> None:
    """One discriminator step, then one generator step, on a batch of real points (B, 2)."""
    batch_size = real.shape[0]
    # 1. discriminator: real -> 1, fake -> 0 (binary cross-entropy, eq. 1)
    fake = g(torch.randn(batch_size, LATENT_DIM, generator=generator))  # (B, 2)
    d_loss = (F.binary_cross_entropy_with_logits(d(real), torch.ones(batch_size))
              + F.binary_cross_entropy_with_logits(d(fake.detach()), torch.zeros(batch_size)))
    opt_d.zero_grad()
    d_loss.backward()
    opt_d.step()
    # 2. generator: maximise log D(G(z)) rather than minimise log(1 - D(G(z))) (non-saturating, sec. 3)
    g_loss = F.binary_cross_entropy_with_logits(d(fake), torch.ones(batch_size))
    opt_g.zero_grad()
    g_loss.backward()
    opt_g.step()
    history["d_loss"].append(d_loss.item())
    history["g_loss"].append(g_loss.item())


# ---------------------------------------------------------------------------------------------
# Measuring mode coverage
# ---------------------------------------------------------------------------------------------

MIN_MODE_FRACTION = 0.2  # a mode is covered with >= 20% of its fair share (Lin et al. 2018, PacGAN)


def mode_coverage(points: Tensor, mixture: GaussianMixture, radius_in_std: float = 3.0) -> dict:
    """How many mixture components the points (n, 2) cover, and how many points fall in none.

    A point belongs to component k if its Mahalanobis distance to mean_k is <= ``radius_in_std``
    (3 std, as in Srivastava et al. 2017, VEEGAN). Component k is covered if it holds at least
    MIN_MODE_FRACTION * weight_k * n points. Data from the mixture itself lands off-mode with
    probability exp(-radius^2 / 2) (1.1% at 3 std, the chi-squared tail with 2 degrees of freedom).
    Returns {"covered": int, "modes": K, "off_mode": share in [0, 1], "counts": [int] * K}.
    """
    if points.ndim != 2 or points.shape[1] != mixture.means.shape[1]:
        raise ValueError(f"points must have shape (n, {mixture.means.shape[1]}); got {tuple(points.shape)}")
    x = points.to(torch.float64)
    diff = x[:, None, :] - mixture.means[None]  # (n, K, D)
    prec = torch.linalg.inv(mixture.covs)  # (K, D, D)
    d2 = torch.einsum("nki,kij,nkj->nk", diff, prec, diff)  # (n, K) squared Mahalanobis distances
    best, k = d2.min(dim=1)  # (n,), (n,)
    inside = best <= radius_in_std**2  # (n,)
    counts = torch.bincount(k[inside], minlength=mixture.means.shape[0])  # (K,)
    need = MIN_MODE_FRACTION * mixture.weights * x.shape[0]  # (K,)
    return {"covered": int((counts >= need).sum()), "modes": int(mixture.means.shape[0]),
            "off_mode": float(1 - inside.double().mean()), "counts": counts.tolist()}
