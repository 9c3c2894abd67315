"""Is the VAE recipe robust? The shapes-latent VAE stage for seeds 0, 1, 2 at 1 and at 2 threads.

Each run is the stage exactly as ``python -m minidiff train --preset shapes-latent`` trains it
(``training.fit``: warm-up, cosine decay, gradient clipping, divergence stop), in its own process so
the thread count is clean, followed by the stage's bar: the share of 256 held-out reconstructions
that the shipped judge reads right (bar 0.95). Prints a table, writes benchmarks/results/vae_seeds.json.

    python benchmarks/vae_seeds.py                    # 6 runs of 6000 steps, ~3-5 min each on an idle CPU
    python benchmarks/vae_seeds.py --steps 300 --seeds 0   # a quick look
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "vae_seeds.json"
ONE_RUN = """
import json, sys, time, torch
torch.set_num_threads({threads})
from minidiff.runs import _vae_score
from minidiff.training import TrainingDiverged
from minidiff.runs import make_source, train_config
from minidiff.vae import VAEConfig, train_vae
config = train_config("shapes-latent", seed={seed}, vae_steps={steps})
source = make_source(config)
start = time.perf_counter()
try:
    vae = train_vae(VAEConfig.from_preset(config.vae_preset), config.vae_steps, config.vae_batch_size,
                    config.seed, "cpu", progress=False, source=source).eval()
    score, _, what = _vae_score(vae, source, None)
    row = dict(bar_score=score, final_mse=sum(vae.losses[-100:]) / 100 / (3 * 32 * 32), diverged=None)
except TrainingDiverged as err:
    row = dict(bar_score=0.0, final_mse=float("nan"), diverged=str(err))
row.update(seconds=round(time.perf_counter() - start, 1))
print("ROW", json.dumps(row))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--parallel", type=int, default=1,
                        help="runs at once (their seconds are then not clean)")
    args = parser.parse_args()
    configs = [(seed, threads) for seed in map(int, args.seeds.split(","))
               for threads in map(int, args.threads.split(","))]
    rows, running = [], []
    print(f"{'seed':>4} {'threads':>7} {'judge reads':>11} {'loss/pixel':>10} {'seconds':>8}  diverged")
    while configs or running:
        while configs and len(running) < args.parallel:
            seed, threads = configs.pop(0)
            code = ONE_RUN.format(threads=threads, seed=seed, steps=args.steps)
            running.append((seed, threads,
                            subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                                                            stderr=subprocess.PIPE, text=True, cwd=ROOT)))
        seed, threads, proc = running.pop(0)
        out, err = proc.communicate()
        line = next((x for x in out.splitlines() if x.startswith("ROW ")), None)
        if line is None:
            raise SystemExit(f"run seed={seed} threads={threads} failed:\n{err[-3000:]}")
        row = {"seed": seed, "threads": threads, **json.loads(line[4:])}
        rows.append(row)
        print(f"{seed:>4} {threads:>7} {row['bar_score']:>11.3f} {row['final_mse']:>10.5f} "
              f"{row['seconds']:>8.0f}  {row['diverged'] or 'no'}", flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"steps": args.steps, "bar": 0.95, "parallel": args.parallel, "rows": rows,
                               "when": time.strftime("%Y-%m-%d %H:%M")}, indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
