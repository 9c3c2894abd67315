"""Tests for minidiff.judge: the shipped judge reads real images exactly, adherence scoring, checkpoints."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil

import pytest
import torch

from minidiff.judge import (
    PRESETS,
    SCORED,
    WEIGHTS,
    Judge,
    JudgeConfig,
    adherence,
    all_right,
    augment,
    evaluate_judge,
    judge_loss,
    load_judge,
    predict_scenes,
    save_judge,
    scene_targets,
    score_scene,
    train_judge,
)
from minidiff.shapes import Object, Scene, make_shapes, parse_caption, render

SCORES = (*SCORED, "all")


@pytest.fixture(scope="module")
def judge() -> Judge:
    return load_judge()


@pytest.fixture(scope="module")
def real():
    return make_shapes(400, seed=77)  # images (N, 3, 32, 32), captions, scenes of 1-4 objects; not training's


def test_shipped_weights_are_small_and_describe_themselves():
    assert WEIGHTS.with_suffix(".safetensors").stat().st_size < 2_000_000
    meta = json.loads(WEIGHTS.with_suffix(".json").read_text())
    assert meta["extra"]["kind"] == "judge" and JudgeConfig(**meta["config"]) == JudgeConfig()


def test_shipped_judge_is_near_perfect_on_real_images(judge):
    scores = evaluate_judge(judge, 600)
    assert all(scores[a] >= 0.99 for a in SCORES), scores


def test_predict_scenes_reads_the_exact_scene(judge, real):
    images, _, scenes = real
    assert predict_scenes(judge, images) == scenes


@pytest.mark.parametrize("resolution", [48, 64])
def test_other_resolutions_are_resized_to_the_judge(judge, resolution):
    scores = evaluate_judge(judge, 200, seed=5, resolution=resolution)
    assert scores["all"] >= 0.99, scores


def test_tolerates_mild_noise(judge, real):
    images, captions, _ = real
    noisy = images + 0.15 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
    assert adherence(judge, noisy, captions)["all"] >= 0.97


def test_adherence_own_captions_vs_shuffled(judge, real):
    images, captions, _ = real
    own = adherence(judge, images, captions)
    assert all(own[a] == 1.0 for a in SCORES), own
    shuffled = adherence(judge, images, captions[1:] + captions[:1])
    assert shuffled["all"] < 0.1
    named = ("shape", "colour", "size", "position", "background", "count")
    assert all(shuffled[a] < 0.7 for a in named), shuffled


def test_adherence_scores_only_what_the_prompt_names(judge):
    scene = Scene("blue", (Object("circle", "red", "large", "top left"),))
    image = render([scene] * 2, 32)  # (2, 3, 32, 32)
    got = adherence(judge, image, ["a red circle", "a green circle on a blue background"])
    assert got["shape"] == 1.0 and got["colour"] == 0.5 and got["background"] == 1.0 and got["all"] == 0.5
    assert math.isnan(got["size"]) and math.isnan(got["position"]) and math.isnan(got["relation"])


def test_score_scene_hand_cases():
    a = Object("circle", "red", "large", "top left")
    b = Object("square", "green", "small", "bottom right")
    want = Scene("black", (a, b))
    assert all(c == n for c, n in score_scene(want, want).values())
    half = score_scene(want, Scene("black", (a,)))  # b is missing: its four attributes are wrong
    assert half["count"] == (0, 1) and half["shape"] == (1, 2) and half["position"] == (1, 2)
    assert half["background"] == (1, 1)
    unplaced = Scene(None, (Object("circle", "red"),))  # names no position: any slot will do
    moved = score_scene(unplaced, Scene("white", (b, a)))
    assert moved["shape"] == (1, 1) and moved["colour"] == (1, 1) and moved["background"] == (0, 0)
    swapped = Scene("black", (Object("circle", "red", "large", "bottom right"),
                              Object("square", "green", "small", "top left")))
    assert score_scene(want, swapped)["position"] == (0, 2)


def test_score_scene_counts_and_relations():
    def at(*places: str, shape: str = "triangle") -> Scene:
        return Scene("white", tuple(Object(shape, "green", "small", p) for p in places))
    three = parse_caption("three green triangles")
    assert all_right(score_scene(three, at("top left", "center", "bottom right")))
    assert score_scene(three, at("top left", "center"))["count"] == (0, 1)
    assert not all_right(score_scene(three, at("top left", "center", "bottom right", "top right")))
    left = parse_caption("a red circle to the left of a blue square")
    red = Object("circle", "red", "small", "center left")
    blue = Object("square", "blue", "large", "center right")
    assert all_right(score_scene(left, Scene("black", (red, blue))))
    flipped = Scene("black", (dataclasses.replace(red, position="center right"),
                              dataclasses.replace(blue, position="center left")))
    assert score_scene(left, flipped)["relation"] == (0, 1) and score_scene(left, flipped)["shape"] == (2, 2)
    diagonal = Scene("black", (red, dataclasses.replace(blue, position="bottom right")))
    assert score_scene(left, diagonal)["relation"] == (0, 1)
    binding = parse_caption("a red circle and a blue square")
    swapped = Scene("black", (dataclasses.replace(red, colour="blue"),
                              dataclasses.replace(blue, colour="red")))
    assert score_scene(binding, swapped)["colour"] == (0, 2) and not all_right(score_scene(binding, swapped))


def test_scene_targets():
    s = Scene("gray", (Object("triangle", "orange", "small", "center"),))
    t = scene_targets([s])
    assert t["shape"].tolist() == [[4] * 4 + [2] + [4] * 4]
    assert t["colour"].tolist() == [[-100] * 4 + [5] + [-100] * 4]
    assert t["size"].tolist() == [[-100] * 4 + [0] + [-100] * 4] and t["background"].tolist() == [2]


def test_training_is_deterministic_and_learns():
    config = JudgeConfig.from_preset("tiny")
    a, b = (train_judge(config, steps=2, batch_size=8, seed=1) for _ in range(2))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    images, _, scenes = make_shapes(64, seed=3)
    trained = train_judge(config, steps=25, batch_size=32, seed=1)
    with torch.no_grad():
        before, after = (judge_loss(j(images), scene_targets(scenes)).item() for j in (a, trained))
    assert after < before - 0.5  # summed cross-entropy of 28 heads, ~5.5 at the start


def test_augment_keeps_shape_and_is_seeded():
    x = make_shapes(8, seed=1)[0]
    a = augment(x, JudgeConfig(), torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, augment(x, JudgeConfig(), torch.Generator().manual_seed(0)))
    assert torch.equal(augment(x, JudgeConfig(noise=0, blur=0, jitter=0), torch.Generator()), x)


def test_save_load_round_trip(tmp_path, real):
    judge = Judge(JudgeConfig.from_preset("tiny")).eval()
    save_judge(judge, tmp_path / "j")
    loaded = load_judge(tmp_path / "j")
    images = real[0][:16]
    assert loaded.config == judge.config
    with torch.no_grad():
        assert all(torch.equal(judge(images)[k], loaded(images)[k]) for k in judge(images))


def test_bad_checkpoints_are_named(tmp_path):
    with pytest.raises(ValueError, match="missing"):
        load_judge(tmp_path / "nothing")
    shutil.copy(WEIGHTS.with_suffix(".safetensors"), tmp_path / "j.safetensors")
    meta = json.loads(WEIGHTS.with_suffix(".json").read_text())
    meta["config"]["hidden"] = 7
    (tmp_path / "j.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="judge checkpoint does not fit"):
        load_judge(tmp_path / "j")


def test_bad_inputs_name_the_parameter(judge, real):
    images, captions, _ = real
    with pytest.raises(ValueError, match="resolution"):
        JudgeConfig(resolution=30)
    with pytest.raises(ValueError, match="huge"):
        JudgeConfig.from_preset("huge")
    with pytest.raises(ValueError, match="steps"):
        train_judge(steps=0)
    with pytest.raises(ValueError, match="captions"):
        adherence(judge, images, captions[:-1])
    with pytest.raises(ValueError, match="images"):
        predict_scenes(judge, images[:, :1])
    with pytest.raises(ValueError, match="hexagon"):
        adherence(judge, images[:1], ["a red hexagon"])
    assert set(PRESETS) >= {"tiny", "default"}
