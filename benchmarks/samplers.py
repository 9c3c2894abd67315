"""Each sampler's error against the number of model evaluations, on an exact denoiser.

Data: toy2d's 8-Gaussian ring (notebook 02), whose ideal denoiser E[x0 | xt] has a closed form, so the
only error left is the sampler's. Two errors per run:
- ode_error: median distance to a 1000-step Heun solution from the same noise (deterministic samplers);
  the median, as in notebook 04, because at few steps a few points stranded between modes lie far from
  the reference and would dominate a mean;
- w2_moments: distance of the sample mean and covariance to the data's (every sampler, DDPM included).
The order of convergence is the slope of log(ode_error) against log(NFE) between 10 and 40 steps.

    python benchmarks/samplers.py [--n 4000] [--json benchmarks/results/samplers.json]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from minidiff.sampling import SAMPLERS, model_evaluations, sample
from minidiff.schedule import make_schedule
from minidiff.toy2d import AnalyticDenoiser, GaussianMixture, eight_gaussians

STEPS = (5, 10, 20, 30, 50, 100, 200, 500, 1000)


def moment_error(x: torch.Tensor, mix: GaussianMixture) -> float:
    """Distance of the sample's mean and covariance (x: (n, 2)) to the mixture's."""
    return ((x.mean(0) - mix.mean).norm() + (torch.cov(x.T) - mix.cov).norm()).item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=4000, help="samples per run")
    parser.add_argument("--json", default="benchmarks/results/samplers.json")
    args = parser.parse_args()
    schedule = make_schedule("cosine", 1000)
    mix = eight_gaussians()
    model = AnalyticDenoiser(mix, schedule)
    z = torch.randn(args.n, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    reference = sample(model, z, schedule, 1000, "heun")
    rows = []
    for sampler in SAMPLERS:
        for steps in STEPS:
            nfe = model_evaluations(sampler, steps)
            if nfe > 1000:
                continue
            start = time.perf_counter()
            x = sample(model, z, schedule, steps, sampler, generator=torch.Generator().manual_seed(1))
            ode_error = None if sampler == "ddpm" else (x - reference).norm(dim=1).median().item()
            rows.append({"sampler": sampler, "steps": steps, "nfe": nfe, "ode_error": ode_error,
                         "moment_error": moment_error(x, mix), "seconds": time.perf_counter() - start})
    orders = {}
    for sampler in SAMPLERS:
        pts = {r["steps"]: r for r in rows if r["sampler"] == sampler}
        if sampler != "ddpm" and 10 in pts and 30 in pts:
            a, b = pts[10], pts[30]
            orders[sampler] = math.log(a["ode_error"] / b["ode_error"]) / math.log(b["nfe"] / a["nfe"])
    print(f"{'sampler':<10}{'steps':>6}{'NFE':>6}{'ode_error':>12}{'moment_err':>12}")
    for r in rows:
        ode = f"{r['ode_error']:.2e}" if r["ode_error"] is not None else "-"
        print(f"{r['sampler']:<10}{r['steps']:>6}{r['nfe']:>6}{ode:>12}{r['moment_error']:>12.3f}")
    print("\nmeasured order (slope of log error vs log NFE, 10 -> 30 steps):")
    for sampler, order in orders.items():
        print(f"  {sampler:<10}{order:.2f}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"rows": rows, "orders": orders, "n": args.n}, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
