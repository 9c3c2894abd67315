"""Measuring generated images: prompt adherence, Frechet distance, diversity, saturation, memorisation.

Every number here is computed from images (N, 3, H, W) in [-1, 1]. Prompt adherence comes from the
judge (``judge.py``), which reads each attribute back from an image; the other metrics need no model
(saturation, diversity, nearest neighbours) or reuse the judge's hidden layer as the feature space of
a Frechet distance, the way FID reuses an Inception network (Heusel et al. 2017).

``evaluate_judge_cli`` and ``evaluate_pipeline_cli`` are what ``python -m minidiff eval`` prints.
Two measure the text side instead: ``padding_attention_share`` and ``binding_probe``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from minidiff.judge import Judge, adherence, evaluate_judge, load_judge
from minidiff.shapes import ShapesConfig, caption, parse_caption, render, sample_scenes

EVAL_PROMPTS = 200  # size of the fixed evaluation set that `python -m minidiff eval` scores
EVAL_PROMPT_SEED = 2_000_003  # prompt generators get seeds ~2e12, far from every training and judge seed
PROMPT_STRIDE = 1_000_003  # a prime: prompt i of seed s is drawn with seed s * PROMPT_STRIDE + i
EVAL_TEMPLATE = 0  # "a large red circle at the top left on a blue background"
JUDGE_TARGET = 0.99  # per-attribute accuracy the judge needs on real images: near-perfect (DESIGN.md, Data)
GENERATE_BATCH = 50  # prompts per pipeline call: bounds memory, does not change any image
FEATURE_BATCH = 512  # images per judge forward pass when extracting features
MEMORISED_QUANTILE = 0.05  # a generated image nearer to the training set than 95% of real held-out ones


def eval_prompts(n: int = EVAL_PROMPTS, seed: int = EVAL_PROMPT_SEED) -> list[str]:
    """The fixed evaluation prompts: one object on a background (``ShapesConfig(max_objects=1)``, the
    distribution the shipped model is trained on), captioned with template 0.

    Prompt i depends only on (seed, i), so the first k prompts are the same for every n >= k.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r} is not allowed; ask for n >= 1 prompts")
    config = ShapesConfig(max_objects=1)
    gens = (torch.Generator().manual_seed(seed * PROMPT_STRIDE + i) for i in range(n))
    return [caption(sample_scenes(1, config, g)[0], EVAL_TEMPLATE) for g in gens]


def prompt_adherence(images: Tensor, prompts: Sequence[str], judge: Judge | None = None) -> dict[str, float]:
    """Per-attribute adherence of images (N, 3, H, W) to their prompts and "all" (every attribute right);
    see ``judge.adherence``. ``judge`` defaults to the shipped one."""
    return adherence(judge if judge is not None else load_judge(), images.float().cpu(), list(prompts))


def saturation(images: Tensor) -> float:
    """Mean HSV saturation (max - min) / max of images (N, 3, H, W) in [-1, 1]; black pixels count as 0.

    Large guidance scales push samples to over-saturated colours (Saharia et al. 2022, sec. 2.3), so this
    rises with the guidance scale. Pure red is 1, any gray is 0.
    """
    check_images(images, "images")
    rgb = ((images.float() + 1) / 2).clamp(0, 1)  # (N, 3, H, W) in [0, 1]
    high, low = rgb.amax(1), rgb.amin(1)  # (N, H, W) each
    sat = torch.where(high > 0, (high - low) / high.clamp_min(1e-12), torch.zeros_like(high))  # (N, H, W)
    return sat.mean().item()


def diversity(images_per_prompt: Tensor) -> float:
    """Mean pairwise RMS pixel distance between the S seeds of each of P prompts.

    images_per_prompt: (P, S, 3, H, W) in [-1, 1], S >= 2. The distance of two images is
    ``sqrt(mean((a - b) ** 2))``, so identical images give 0 and an all-black vs all-white pair gives 2.
    """
    if images_per_prompt.ndim != 5 or images_per_prompt.shape[1] < 2:
        raise ValueError("images_per_prompt must be (P, S, 3, H, W) with S >= 2 seeds; "
                         f"got {tuple(images_per_prompt.shape)}")
    p, s = images_per_prompt.shape[:2]
    flat = images_per_prompt.float().reshape(p, s, -1)  # (P, S, D)
    dist = torch.cdist(flat, flat) / math.sqrt(flat.shape[-1])  # (P, S, S)
    pairs = torch.triu_indices(s, s, offset=1)  # (2, S(S-1)/2)
    return dist[:, pairs[0], pairs[1]].mean().item()


@torch.no_grad()
def judge_features(judge: Judge, images: Tensor) -> Tensor:
    """The judge's hidden layer (``Judge.hidden``: the input of its last linear layer) for images
    (N, 3, H, W): (N, hidden), ``FEATURE_BATCH`` images per forward pass."""
    check_images(images, "images")
    judge.eval()
    dev = next(judge.parameters()).device
    return torch.cat([judge.hidden(x.to(dev)).cpu() for x in images.float().split(FEATURE_BATCH)])


def gaussian_frechet_distance(mu_a: Tensor, cov_a: Tensor, mu_b: Tensor, cov_b: Tensor) -> float:
    """Squared Frechet (2-Wasserstein) distance between N(mu_a, cov_a) and N(mu_b, cov_b) (Dowson &
    Landau 1982; used by FID, Heusel et al. 2017): ``|mu_a - mu_b|^2 + Tr(A + B - 2 (A B)^(1/2))``.

    mu: (D,), cov: (D, D). Computed in float64 with Tr((A B)^(1/2)) = Tr((A^(1/2) B A^(1/2))^(1/2)),
    whose inner matrix is symmetric, so two eigendecompositions replace a general matrix square root.
    """
    mu_a, mu_b, cov_a, cov_b = (x.double() for x in (mu_a, mu_b, cov_a, cov_b))
    if mu_a.shape != mu_b.shape or cov_a.shape != cov_b.shape or cov_a.shape != (*mu_a.shape, *mu_a.shape):
        raise ValueError(f"need mu (D,) and cov (D, D) of equal D; got {tuple(mu_a.shape)}, "
                         f"{tuple(cov_a.shape)}, {tuple(mu_b.shape)}, {tuple(cov_b.shape)}")
    # 1. A^(1/2) from the eigendecomposition of the symmetric PSD matrix A
    evals, evecs = torch.linalg.eigh(cov_a)
    sqrt_a = evecs @ torch.diag(evals.clamp_min(0).sqrt()) @ evecs.T  # (D, D)
    # 2. Tr((A^(1/2) B A^(1/2))^(1/2)) = sum of square roots of its eigenvalues
    inner = sqrt_a @ cov_b @ sqrt_a  # (D, D)
    tr_sqrt = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp_min(0).sqrt().sum()
    # 3. mean term plus covariance term (>= 0; rounding can leave a tiny negative for equal Gaussians)
    return max(0.0, ((mu_a - mu_b).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * tr_sqrt).item())


def frechet_distance(feats_a: Tensor, feats_b: Tensor) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (N_a, D) and (N_b, D), N >= 2.

    With ``judge_features`` as features this is an FID on shapes (Heusel et al. 2017).
    """
    stats = []
    for name, feats in (("feats_a", feats_a), ("feats_b", feats_b)):
        if feats.ndim != 2 or feats.shape[0] < 2:
            raise ValueError(f"{name} must be (N, D) with N >= 2 rows; got {tuple(feats.shape)}")
        f = feats.double()
        stats.append((f.mean(0), torch.atleast_2d(torch.cov(f.T))))  # (D,), (D, D)
    return gaussian_frechet_distance(stats[0][0], stats[0][1], stats[1][0], stats[1][1])


def nearest_neighbour_distance(generated: Tensor, training: Tensor, return_index: bool = False,
                               batch_size: int = 256) -> Tensor | tuple[Tensor, Tensor]:
    """RMS pixel distance from each generated image (N, 3, H, W) to its nearest training image (M, 3, H, W):
    (N,), plus the neighbours' indices (N,) with ``return_index``. A memorised image sits at ~0
    (Carlini et al. 2023 look for near-copies the same way)."""
    check_images(generated, "generated", (1, 3))
    check_images(training, "training", (1, 3))
    if generated.shape[1:] != training.shape[1:]:
        raise ValueError(f"generated {tuple(generated.shape[1:])} and training {tuple(training.shape[1:])} "
                         "images differ in size")
    train_flat = training.float().flatten(1)  # (M, D)
    dists, index = [], []
    for chunk in generated.float().flatten(1).split(batch_size):  # (b, D)
        d, i = torch.cdist(chunk, train_flat).min(1)  # (b,), (b,)
        dists.append(d / math.sqrt(train_flat.shape[1]))
        index.append(i)
    return (torch.cat(dists), torch.cat(index)) if return_index else torch.cat(dists)


def generate(pipe: Any, prompts: Sequence[str], seeds: Sequence[int] | None = None,
             **sample_kwargs: Any) -> Tensor:
    """Images (N, 3, H, W) from a ``pipeline.Pipeline``, ``GENERATE_BATCH`` prompts per call; seed i
    defaults to i. Batching does not change any image (one generator per image)."""
    seeds = list(range(len(prompts))) if seeds is None else list(seeds)
    if len(seeds) != len(prompts):
        raise ValueError(f"got {len(seeds)} seeds for {len(prompts)} prompts; pass one seed per prompt")
    return torch.cat([pipe(list(prompts[i:i + GENERATE_BATCH]), seeds=seeds[i:i + GENERATE_BATCH],
                           **sample_kwargs).cpu() for i in range(0, len(prompts), GENERATE_BATCH)])


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], header: bool = True,
                 width: int = 0) -> str:
    """A plain-text table, one row per dict; floats printed with 3 decimals; every column at least
    ``width`` wide (so rows printed one at a time with ``header=False`` line up)."""
    cells = [[f"{r[c]:.3f}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in columns]
             for r in rows]
    widths = [max(width, len(c), *(len(row[j]) for row in cells)) for j, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths))] if header else []
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def evaluate_judge_cli(n: int = 2000) -> dict[str, Any]:
    """Print the shipped judge's per-attribute accuracy on ``n`` held-out real shapes images (one or two
    objects) and on the rendered evaluation prompts (the ceiling for adherence); must be >= 99% each."""
    judge = load_judge()
    real = evaluate_judge(judge, n)
    prompts = eval_prompts()
    ceiling = adherence(judge, render([parse_caption(p) for p in prompts], judge.config.resolution), prompts)
    rows = [{"images": f"{n} real (1-4 objects)", **real},
            {"images": f"{EVAL_PROMPTS} eval prompts, rendered", **ceiling}]
    print("judge accuracy on real shapes images")
    print(format_table(rows, ["images", *real]))
    worst = min(v for r in (real, ceiling) for k, v in r.items() if not math.isnan(v))
    verdict = "meets" if worst >= JUDGE_TARGET else "BELOW"
    print(f"lowest: {worst:.4f} ({verdict} the {JUDGE_TARGET:.0%} target)")
    return {"judge_real": real, "judge_eval_prompts_rendered": ceiling, "judge_ok": worst >= JUDGE_TARGET}


def evaluate_pipeline_cli(weights: str | Path | None = None, n_prompts: int = EVAL_PROMPTS, steps: int = 20,
                          guidance_scale: float = 3.0, sampler: str = "dpmpp_2m",
                          device: str = "auto") -> dict[str, Any]:
    """Generate one image per evaluation prompt (seed = index) and print per-attribute adherence + "all".

    ``weights``: a training run's folder, or None for the shipped pipeline.
    """
    from minidiff.pipeline import load_pipeline

    pipe = load_pipeline(weights, device=device)
    prompts = eval_prompts(n_prompts)
    start = time.perf_counter()
    images = generate(pipe, prompts, steps=steps, sampler=sampler, guidance_scale=guidance_scale)
    seconds = time.perf_counter() - start
    scores = {k: v for k, v in prompt_adherence(images, prompts).items() if not math.isnan(v)}  # named ones
    settings = {"weights": str(weights or "shipped"), "prompts": n_prompts, "steps": steps,
                "sampler": sampler, "guidance_scale": guidance_scale, "device": str(pipe.device),
                "seconds": round(seconds, 2)}
    print(f"\nprompt adherence of {settings['weights']} on {n_prompts} evaluation prompts "
          f"({steps} {sampler} steps, guidance {guidance_scale}, {seconds:.1f} s on {pipe.device})")
    print(format_table([scores], list(scores)))
    return {"adherence": scores, "settings": settings}


def check_images(images: Tensor, name: str, channels: tuple[int, ...] = (3,)) -> None:
    if images.ndim != 4 or images.shape[1] not in channels:
        raise ValueError(f"{name} must be (N, C, H, W) images in [-1, 1] with C in {channels}; "
                         f"got shape {tuple(images.shape)}")


@torch.no_grad()
def memorisation(generated: Tensor, training: Tensor, held_out: Tensor) -> dict[str, float]:
    """Share of generated images (N, C, H, W) nearer to their nearest training image than the nearest
    ``MEMORISED_QUANTILE`` of real held-out images are to theirs. A model that samples the data
    distribution without copying scores about MEMORISED_QUANTILE; one that copies scores up to 1."""
    threshold = torch.quantile(nearest_neighbour_distance(held_out, training), MEMORISED_QUANTILE).item()
    share = (nearest_neighbour_distance(generated, training) < threshold).float().mean().item()
    return {"memorised": share, "if_not_copying": MEMORISED_QUANTILE, "threshold": threshold}


def evaluate_data_run_cli(weights: str | Path, per_label: int = EVAL_PROMPTS // 10, steps: int = 20,
                          guidance_scale: float = 3.0, sampler: str = "dpmpp_2m",
                          device: str = "auto") -> dict[str, Any]:
    """``eval --weights RUN`` for a run trained on stored data: labelled data gets label adherence (the
    share of images the run's judge reads as the prompted label), every run a Frechet distance against
    held-out real images beside the real-vs-real floor, and memorisation."""
    from minidiff.label_judge import load_any_judge, predict_labels
    from minidiff.pipeline import load_pipeline
    from minidiff.runs import make_source, run_config
    from minidiff.text import load_clip

    config = run_config(weights)
    source = make_source(config)
    pipe = load_pipeline(weights, device=device)
    held, held_captions = source.held_out()
    if source.label_names is not None:
        prompts, labels = source.label_prompts(per_label)
        judge = load_any_judge(Path(weights) / "judge")
        features = judge.features
    else:
        prompts, labels = held_captions[:EVAL_PROMPTS], None
        clip = load_clip(Path(weights) / "text_encoder")
        features = clip.encode_image
    start = time.perf_counter()
    images = generate(pipe, prompts, steps=steps, sampler=sampler, guidance_scale=guidance_scale)
    seconds = time.perf_counter() - start
    train = source.pixels(source.train_index)
    real = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:len(images)]]
    with torch.no_grad():
        feats = {k: features(x.float()).cpu() for k, x in (("gen", images), ("held", held), ("real", real))}
    row: dict[str, Any] = {}
    if labels is not None:
        read = predict_labels(judge, images)
        row["label_adherence"] = (read == torch.tensor(labels)).float().mean().item()
    row.update(frechet=frechet_distance(feats["gen"], feats["held"]),
               frechet_real_floor=frechet_distance(feats["real"], feats["held"]),
               **memorisation(images.float(), train, held))
    what = "label adherence, " if labels is not None else "no labels: only "
    space = "judge" if labels is not None else "CLIP image"
    print(f"\n{what}Frechet distance ({space} features, {len(held)} held-out real images) and memorisation "
          f"of {weights} on {len(prompts)} prompts ({steps} {sampler} steps, guidance {guidance_scale}, "
          f"{seconds:.1f} s)")
    print(format_table([row], list(row)))
    if labels is not None:
        per = [{"label": name, "adherence": (read[torch.tensor(labels) == k] == k).float().mean().item()}
               for k, name in enumerate(source.label_names)]
        print(format_table(per, ["label", "adherence"]))
        row["per_label"] = {r["label"]: r["adherence"] for r in per}
    settings = {"weights": str(weights), "prompts": len(prompts), "steps": steps, "sampler": sampler,
                "guidance_scale": guidance_scale, "seconds": round(seconds, 2)}
    return {"data_run": row, "settings": settings}


@torch.no_grad()
def padding_attention_share(pipe: Any, prompt: str, seed: int = 0, steps: int = 20,
                            guidance_scale: float = 3.0, unmasked: bool = False) -> float:
    """Share of the image queries' cross-attention that lands on <pad> tokens while ``pipe`` draws
    ``prompt``: the attention weights (B, heads, N, L) of the prompt's branch, summed over pad keys and
    averaged over queries, heads, levels and steps. 0 when padding is masked (``UNetConfig.mask_padding``).
    ``unmasked=True`` measures the model as it was before masking: the encoder's own pad rows, attended
    like words (the pipeline is restored afterwards)."""
    from minidiff.text import PAD_ID

    encoder, tokenizer, config = pipe.text_encoder, pipe.tokenizer, pipe.unet.config
    tokens = tokenizer.encode([prompt], encoder.config.max_len)  # (1, L)
    was_masked = config.mask_padding
    if unmasked:
        pipe.encode = lambda prompts: encoder(tokenizer.encode(list(prompts), encoder.config.max_len))
        config.mask_padding = False
    try:
        with pipe.unet.record_attention() as records:
            pipe([prompt], seeds=seed, steps=steps, guidance_scale=guidance_scale)
    finally:
        if unmasked:
            del pipe.encode  # back to Pipeline.encode
            config.mask_padding = was_masked
    pad = tokens[0] == PAD_ID  # (L,)
    return torch.stack([w[-1][..., pad.to(w.device)].sum(-1).mean() for _, w in records]).mean().item()



BINDING_TEMPLATES = ("a {c1} {s1} and a {c2} {s2}", "a {c1} {s1} to the left of a {c2} {s2}",
                     "a small {c1} {s1} above a large {c2} {s2}")


@torch.no_grad()
def binding_probe(pipe: Any, templates: Sequence[str] = BINDING_TEMPLATES) -> dict[str, dict[str, float]]:
    """Do the tokens the U-Net cross-attends to say which colour goes with which shape?

    Two-object prompts, every ``(c1, s1, c2, s2)`` with different colours and shapes, in each template
    (the colour word right before its shape word). Logistic regressions read, from one token's vector
    in ``cond`` (B, L, D), the colour of that shape ("shape -> own colour") or of the other one, and
    the shape a colour word belongs to; they fit on two thirds of the combinations and are scored on
    the rest. "own" far above "other" means the token binds; both alike mean a bag of words, and a
    pixel drawing the circle cannot find its colour by attending to "circle". "object word cosine"
    is the mean cosine similarity of a prompt's four object-word tokens: near 1, every key looks alike
    and cross-attention can hardly pick one word over another. Keys ``frozen`` (the
    text encoder's tokens), ``refined`` (after ``UNet.refine_text``, when the U-Net has a refiner) and
    ``chance``.
    """
    import numpy
    from sklearn.linear_model import LogisticRegression

    from minidiff.shapes import COLOURS, SHAPES

    combos = [(c1, s1, c2, s2) for c1 in COLOURS for s1 in SHAPES for c2 in COLOURS for s2 in SHAPES
              if c1 != c2 and s1 != s2]
    views: dict[str, list[Tensor]] = {"frozen": []}
    if len(getattr(pipe.unet, "text_refiner", ())):
        views["refined"] = []
    labels = []  # per object: (its shape, its colour, the other's shape, the other's colour, held out)
    cosines: dict[str, list[float]] = {name: [] for name in views}  # per prompt: its 4 object words' cosine
    for template in templates:
        prompts = [template.format(c1=c1, s1=s1, c2=c2, s2=s2) for c1, s1, c2, s2 in combos]
        cond = pipe.encode(prompts)  # (N, L, D)
        by_view = {"frozen": cond}
        if "refined" in views:
            by_view["refined"] = pipe.unet.refine_text(cond)  # (N, L, D)
        for n, (prompt, (c1, s1, c2, s2)) in enumerate(zip(prompts, combos)):
            words = prompt.split()  # word i is token i + 1 (<bos> is token 0)
            objects = ((words.index(s1), (s1, c1), (s2, c2)), (len(words) - 1, (s2, c2), (s1, c1)))
            for noun, own, other in objects:
                for name, x in by_view.items():
                    views[name].append(torch.stack([x[n, noun + 1], x[n, noun]]))  # (2, D): shape, colour
                labels.append((*own, *other, n % 3 == 0))
            for name in by_view:
                tokens = torch.nn.functional.normalize(torch.stack(views[name][-2:]).flatten(0, 1), dim=-1)
                cosines[name].append(((tokens @ tokens.T).sum().item() - 4) / 12)  # mean of the 6 pairs
    fit = numpy.array([not lab[4] for lab in labels])
    tasks = {"shape -> own colour": (0, 1), "shape -> other colour": (0, 3),
             "colour -> own shape": (1, 0), "colour -> other shape": (1, 2)}  # (token, label index)
    result = {}
    for name, rows in views.items():
        x = torch.stack(rows).cpu().numpy()  # (objects, 2, D)
        result[name] = {}
        for task, (token, k) in tasks.items():
            y = numpy.array([lab[k] for lab in labels])
            probe = LogisticRegression(max_iter=5000).fit(x[fit, token], y[fit])
            result[name][task] = float(probe.score(x[~fit, token], y[~fit]))
        result[name]["object word cosine"] = sum(cosines[name]) / len(cosines[name])
    result["chance"] = {task: 1 / (len(COLOURS) if "colour" in task.split()[-1] else len(SHAPES))
                        for task in tasks}
    return result
