"""Tests for minidiff.metrics against closed forms and hand-computed values."""

from __future__ import annotations

import pytest
import torch

from minidiff.checkpoint import save_checkpoint
from minidiff.judge import load_judge
from minidiff.metrics import (
    EVAL_PROMPTS,
    binding_probe,
    diversity,
    eval_prompts,
    evaluate_judge_cli,
    evaluate_pipeline_cli,
    format_table,
    frechet_distance,
    gaussian_frechet_distance,
    generate,
    judge_features,
    nearest_neighbour_distance,
    prompt_adherence,
    saturation,
)
from minidiff.pipeline import Pipeline
from minidiff.shapes import ShapesConfig, make_shapes, parse_caption, render, vocabulary
from minidiff.text import TextEncoder, TextEncoderConfig, Tokenizer, save_text_encoder
from minidiff.unet import UNet, UNetConfig


def solid(rgb: tuple[float, float, float], n: int = 2, size: int = 8) -> torch.Tensor:
    """n images (n, 3, size, size) of one colour given in [0, 1]."""
    return (torch.tensor(rgb).reshape(1, 3, 1, 1) * 2 - 1).expand(n, 3, size, size).clone()


def test_frechet_of_identical_gaussians_is_zero():
    a = torch.randn(4, 4, dtype=torch.float64)
    cov = a @ a.T + torch.eye(4, dtype=torch.float64)
    mu = torch.randn(4, dtype=torch.float64)
    assert gaussian_frechet_distance(mu, cov, mu, cov) == pytest.approx(0.0, abs=1e-9)


def test_frechet_one_dimensional_closed_form():
    # N(0, 1) vs N(1, 4): (0 - 1)^2 + 1 + 4 - 2 * sqrt(1 * 4) = 2
    one = torch.ones(1, 1, dtype=torch.float64)
    got = gaussian_frechet_distance(torch.zeros(1), one, torch.ones(1), 4 * one)
    assert got == pytest.approx(2.0, abs=1e-12)


def test_frechet_diagonal_closed_form():
    # diagonal covariances: sum_i (m_i - n_i)^2 + (sqrt(a_i) - sqrt(b_i))^2,
    # by hand = 1 + 4 + (1 - 3)^2 + (2 - 1)^2 = 10
    mu_a, mu_b = torch.tensor([0.0, 0.0]), torch.tensor([1.0, 2.0])
    cov_a, cov_b = torch.diag(torch.tensor([1.0, 4.0])), torch.diag(torch.tensor([9.0, 1.0]))
    assert gaussian_frechet_distance(mu_a, cov_a, mu_b, cov_b) == pytest.approx(10.0, abs=1e-9)
    assert gaussian_frechet_distance(mu_b, cov_b, mu_a, cov_a) == pytest.approx(10.0, abs=1e-9)  # symmetric


def test_frechet_of_non_commuting_covariances_matches_matrix_square_root():
    # reference: Tr((A B)^(1/2)) from the eigenvalues of A B (real, >= 0 for PSD A, B)
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(3, 3, generator=g, dtype=torch.float64) for _ in range(2))
    cov_a, cov_b = a @ a.T + 0.1 * torch.eye(3), b @ b.T + 0.1 * torch.eye(3)
    tr_sqrt = torch.linalg.eigvals(cov_a @ cov_b).real.clamp_min(0).sqrt().sum()
    expected = (cov_a.trace() + cov_b.trace() - 2 * tr_sqrt).item()
    got = gaussian_frechet_distance(torch.zeros(3), cov_a, torch.zeros(3), cov_b)
    assert got == pytest.approx(expected, rel=1e-9)


def test_frechet_from_samples_approaches_the_closed_form():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(200_000, 1, generator=g, dtype=torch.float64)  # N(0, 1)
    b = 1 + 2 * torch.randn(200_000, 1, generator=g, dtype=torch.float64)  # N(1, 4)
    assert frechet_distance(a, b) == pytest.approx(2.0, abs=0.05)
    with pytest.raises(ValueError, match="feats_a"):
        frechet_distance(torch.randn(1, 3), torch.randn(5, 3))


def test_saturation_of_pure_red_is_one_and_of_grays_zero():
    assert saturation(solid((1.0, 0.0, 0.0))) == pytest.approx(1.0)
    for level in (0.0, 0.25, 0.5, 1.0):
        assert saturation(solid((level, level, level))) == pytest.approx(0.0, abs=1e-7)
    # (max - min) / max by hand: (0.8 - 0.2) / 0.8 = 0.75; half the pixels gray -> mean 0.375
    half = torch.cat([solid((0.8, 0.2, 0.4), 1), solid((0.3, 0.3, 0.3), 1)], dim=3)
    assert saturation(half) == pytest.approx(0.375, abs=1e-6)
    with pytest.raises(ValueError, match="images"):
        saturation(torch.zeros(3, 8, 8))


def test_diversity_is_zero_for_identical_seeds_and_two_for_black_vs_white():
    same = solid((0.2, 0.4, 0.6), n=3).unsqueeze(0).expand(2, 3, 3, 8, 8)  # (P=2, S=3, 3, 8, 8)
    assert diversity(same) == pytest.approx(0.0, abs=1e-6)
    pair = torch.stack([solid((0, 0, 0), 1)[0], solid((1, 1, 1), 1)[0]]).unsqueeze(0)  # (1, 2, 3, 8, 8)
    assert diversity(pair) == pytest.approx(2.0, abs=1e-5)
    with pytest.raises(ValueError, match="S >= 2"):
        diversity(torch.zeros(2, 1, 3, 8, 8))


def test_eval_prompts_are_fixed_single_object_and_parseable():
    prompts = eval_prompts()
    assert len(prompts) == EVAL_PROMPTS and prompts == eval_prompts()
    assert eval_prompts(10) == prompts[:10]  # a shorter set is a prefix of the fixed one
    scenes = [parse_caption(p) for p in prompts]
    assert all(s.complete and len(s.objects) == 1 for s in scenes)
    assert prompts[0].startswith("a ") and " background" in prompts[0]  # template 0
    assert len({s.objects[0].shape for s in scenes}) == 4 and len({s.background for s in scenes}) == 4
    with pytest.raises(ValueError, match="n="):
        eval_prompts(0)


def test_prompt_adherence_of_rendered_prompts_is_perfect():
    prompts = eval_prompts(40)
    images = render([parse_caption(p) for p in prompts], 32)
    scores = prompt_adherence(images, prompts)
    assert scores["all"] == 1.0
    flipped = prompt_adherence(images.flip(3), prompts)  # mirror left-right: most positions now wrong
    assert flipped["position"] < 0.5 and flipped["shape"] == 1.0


def test_nearest_neighbour_of_a_training_image_is_itself():
    training, _, _ = make_shapes(50, ShapesConfig(resolution=16), seed=3)
    d, idx = nearest_neighbour_distance(training[[7, 3, 41]], training, return_index=True, batch_size=2)
    assert torch.equal(idx, torch.tensor([7, 3, 41])) and torch.allclose(d, torch.zeros(3), atol=1e-3)
    # an image one constant 0.1 away from every pixel of a training image: RMS distance 0.1
    shifted = training[:1] + 0.1
    assert nearest_neighbour_distance(shifted, training)[0].item() == pytest.approx(0.1, abs=1e-4)


def test_judge_features_tell_a_shifted_distribution_from_a_resample():
    judge = load_judge()
    real, _, _ = make_shapes(500, ShapesConfig(max_objects=1), seed=5)
    resample, _, _ = make_shapes(500, ShapesConfig(max_objects=1), seed=6)
    black, _, _ = make_shapes(500, ShapesConfig(max_objects=1, backgrounds=("black",)), seed=6)
    f_real = judge_features(judge, real)
    assert f_real.shape == (500, judge.config.hidden)
    fd_same = frechet_distance(f_real, judge_features(judge, resample))
    fd_black = frechet_distance(f_real, judge_features(judge, black))
    assert fd_black > 3 * fd_same  # only black backgrounds: every image is valid, the distribution is not


def test_format_table_aligns_columns():
    text = format_table([{"a": 1.0, "bb": "x"}, {"a": 0.25, "bb": "long"}], ["a", "bb"])
    assert text.splitlines() == ["    a    bb", "1.000     x", "0.250  long"]
    assert format_table([{"a": 0.5}], ["a"], header=False, width=6) == " 0.500"


@pytest.fixture(scope="module")
def pixel_run(tmp_path_factory):
    """A run folder with an untrained tiny pixel-space U-Net and text encoder (what load_pipeline reads)."""
    folder = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    tokenizer = Tokenizer(vocabulary())
    encoder = TextEncoder(TextEncoderConfig(vocab_size=len(tokenizer), dim=16, layers=1, heads=2))
    save_text_encoder(encoder, tokenizer, folder / "text_encoder")
    unet = UNet(UNetConfig(in_channels=3, base_channels=8, channel_mults=(1, 2), attention_levels=(1,),
                           text_dim=16, heads=2))
    train = {"latent": False, "resolution": 16, "schedule": "cosine", "T": 1000}
    save_checkpoint(folder / "unet", unet, unet.config, {"kind": "unet", "train_config": train})
    return folder


def test_generate_does_not_depend_on_batching(pixel_run, monkeypatch):
    from minidiff import metrics
    from minidiff.pipeline import load_pipeline

    pipe = load_pipeline(pixel_run, device="cpu")
    prompts = eval_prompts(3)
    whole = generate(pipe, prompts, steps=2, sampler="ddim")
    monkeypatch.setattr(metrics, "GENERATE_BATCH", 2)
    assert torch.equal(generate(pipe, prompts, steps=2, sampler="ddim"), whole)
    assert whole.shape == (3, 3, 16, 16) and isinstance(pipe, Pipeline)


def test_evaluate_cli_functions_report_every_attribute(pixel_run, capsys):
    report = evaluate_pipeline_cli(pixel_run, n_prompts=4, steps=2, sampler="euler", device="cpu")
    assert set(report["adherence"]) == {"shape", "colour", "size", "position", "background", "count", "all"}
    assert all(0.0 <= v <= 1.0 for v in report["adherence"].values()) and report["settings"]["prompts"] == 4
    judged = evaluate_judge_cli(n=100)
    assert judged["judge_ok"] and judged["judge_real"]["all"] >= 0.99
    out = capsys.readouterr().out
    assert "prompt adherence" in out and "judge accuracy" in out and "position" in out


def token_stub(binds: bool):
    """A pipeline whose ``encode`` writes known vectors: one-hot of each word, plus, when ``binds``, the
    colour of a shape word's own object (and the shape of a colour word's) or, when not, of both
    objects' colours and shapes (a bag of words)."""
    from types import SimpleNamespace

    from minidiff.shapes import COLOURS, SHAPES

    index = {w: i for i, w in enumerate(COLOURS + SHAPES)}

    def encode(prompts):
        out = torch.zeros(len(prompts), 12, len(index))  # (B, L, D)
        for b, prompt in enumerate(prompts):
            words = prompt.split()
            named = [w for w in words if w in index]
            for i, w in enumerate(words):
                if w in COLOURS:
                    partner = [words[i + 1]] if binds else [v for v in named if v in SHAPES]
                elif w in SHAPES:
                    partner = [words[i - 1]] if binds else [v for v in named if v in COLOURS]
                else:
                    continue
                for v in [w, *partner]:
                    out[b, i + 1, index[v]] += 1.0
        return out

    refiner = SimpleNamespace(text_refiner=[None], refine_text=lambda c: 2 * c)  # a refiner that rescales
    return SimpleNamespace(encode=encode, unet=refiner)


def test_binding_probe_tells_bound_tokens_from_a_bag_of_words():
    bound = binding_probe(token_stub(binds=True))
    for view in ("frozen", "refined"):  # the stub's refiner only rescales: the same answers
        assert bound[view]["shape -> own colour"] == 1.0 and bound[view]["colour -> own shape"] == 1.0
        # the other object's attribute is not in the token; only "it differs from mine" is
        assert bound[view]["shape -> other colour"] <= 0.3 and bound[view]["colour -> other shape"] <= 0.45
    # bound: "red" = "circle" = red + circle, "blue" = "square": 2 of the 6 pairs alike, 4 orthogonal
    assert bound["frozen"]["object word cosine"] == pytest.approx(1 / 3)
    bag = binding_probe(token_stub(binds=False))["frozen"]
    # a bag: every token is its word + the 2 words of the other kind, so any two share 2 of 3 parts
    assert bag.pop("object word cosine") == pytest.approx(2 / 3)
    # both colours in every token, unordered: own and other are told apart no better than a coin flip
    assert all(v == pytest.approx(0.5, abs=0.05) for v in bag.values())
    assert bound["chance"] == {"shape -> own colour": 1 / 6, "shape -> other colour": 1 / 6,
                               "colour -> own shape": 1 / 4, "colour -> other shape": 1 / 4}
