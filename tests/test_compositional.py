"""Tests for the compositional benchmark (GenEval's six categories on shapes) and its CLI."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from minidiff.cli import main
from minidiff.compositional import (
    CATEGORIES,
    COMPOSITIONAL_SEEDS,
    compositional_benchmark,
    compositional_prompts,
    real_renders,
    realise,
)
from minidiff.judge import load_judge
from minidiff.metrics import padding_attention_share
from minidiff.shapes import FIELDS, RELATIONS, Scene, parse_caption, relation_holds, render


@pytest.fixture(scope="module")
def judge():
    return load_judge()


def test_prompts_cover_the_six_categories_and_parse():
    prompts = compositional_prompts()
    assert tuple(prompts) == CATEGORIES and prompts == compositional_prompts()
    parsed = {c: [parse_caption(p) for p in ps] for c, ps in prompts.items()}
    assert all(len(s.objects) == 1 for c in ("single_object", "colours") for s in parsed[c])
    pairs = parsed["two_objects"] + parsed["attribute_binding"]
    assert all(len(s.objects) == 2 and s.relation is None for s in pairs)
    assert {len(s.objects) for s in parsed["counting"]} == {2, 3, 4}
    assert all(len(set(s.objects)) == 1 for s in parsed["counting"])
    assert {s.relation for s in parsed["position"]} == set(RELATIONS)
    bound = (s.objects for s in parsed["attribute_binding"])
    assert all(a.colour != b.colour and a.shape != b.shape for a, b in bound)
    every = [s for ss in parsed.values() for s in ss]
    assert all(s.background is None and all(o.position is None for o in s.objects) for s in every)
    every_prompt = [p for ps in prompts.values() for p in ps]
    assert len(set(every_prompt)) == len(every_prompt)  # no repeats


def test_realise_shows_exactly_the_prompt():
    g = torch.Generator().manual_seed(8)
    for text in ("three green triangles", "a red circle to the left of a blue square",
                 "a circle below a square", "a small circle and a large square on a gray background",
                 "four small diamonds", "a large red circle at the top left on a blue background"):
        want = parse_caption(text)
        for _ in range(20):
            got = realise(want, g)
            assert got.complete and len(got.objects) == len(want.objects)
            assert want.background in (None, got.background)
            assert all(o.colour != got.background for o in got.objects)
            if want.relation:
                by_shape = {o.shape: o.position for o in got.objects}
                assert relation_holds(want.relation, *(by_shape[o.shape] for o in want.objects))
            assert all(any(all(getattr(w, f) in (None, getattr(o, f)) for f in FIELDS) for o in got.objects)
                       for w in want.objects)
    with pytest.raises(ValueError, match="no valid scene"):
        realise(parse_caption("a large circle at the top left and a large square at the top center"), g)


def test_judge_scores_real_renders_of_every_category_at_least_099(judge):
    """The ceiling: the perfect model, >= 500 real images per category (42 seeds of >= 12 prompts)."""
    result = compositional_benchmark(real_renders, judge, seeds=42)
    assert set(result["categories"]) == set(CATEGORIES)
    assert all(v >= 0.99 for v in result["categories"].values()), result
    assert result["overall"] == pytest.approx(sum(result["categories"].values()) / 6)


def _swap_colours(scene: Scene) -> Scene:
    a, b = scene.objects
    swapped = (dataclasses.replace(a, colour=b.colour), dataclasses.replace(b, colour=a.colour))
    return Scene(scene.background, swapped)


def _wrong_model(change):
    """A "model" that draws a realised scene of each prompt, then breaks it with ``change``."""
    def make_images(prompts, seeds):
        gens = [torch.Generator().manual_seed(1000 * s + i) for i, s in enumerate(seeds)]
        return render([change(realise(parse_caption(p), g)) for p, g in zip(prompts, gens)], 32)
    return make_images


def test_swapped_colours_fail_binding(judge):
    def swap(scene: Scene) -> Scene:
        two_colours = len(scene.objects) == 2 and scene.objects[0].colour != scene.objects[1].colour
        return _swap_colours(scene) if two_colours else scene
    result = compositional_benchmark(_wrong_model(swap), judge)["categories"]
    assert result["attribute_binding"] == 0.0  # every binding prompt names two different colours
    assert result["single_object"] >= 0.99 and result["colours"] >= 0.99 and result["counting"] >= 0.99


def test_one_object_too_many_or_too_few_fails_everything_but_what_it_keeps(judge):
    first_only = _wrong_model(lambda s: Scene(s.background, s.objects[:1]))
    result = compositional_benchmark(first_only, judge)["categories"]
    assert result["counting"] == 0.0 and result["two_objects"] == 0.0 and result["position"] == 0.0
    assert result["single_object"] >= 0.99
    blank = compositional_benchmark(lambda p, s: torch.zeros(len(p), 3, 32, 32), judge)
    assert blank["overall"] == 0.0


def test_mirrored_relations_fail_position(judge):
    mirror = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}

    def flip(scene: Scene) -> Scene:
        where = [" ".join(mirror.get(w, w) for w in o.position.split()) for o in scene.objects]
        objects = tuple(dataclasses.replace(o, position=p) for o, p in zip(scene.objects, where))
        return Scene(scene.background, objects)
    result = compositional_benchmark(_wrong_model(flip), judge)["categories"]
    assert result["position"] == 0.0 and result["two_objects"] >= 0.99


def test_bad_model_output_is_named(judge):
    with pytest.raises(ValueError, match="make_images"):
        compositional_benchmark(lambda p, s: torch.zeros(len(p), 1, 32, 32), judge)


class PerfectPipeline:
    """Stands in for a Pipeline: draws real renders of each prompt."""

    device = torch.device("cpu")

    def __call__(self, prompts, seeds, **kwargs):
        return real_renders(prompts, seeds)


def test_cli_prints_the_table_and_writes_json(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("minidiff.pipeline.load_pipeline", lambda weights, device="auto": PerfectPipeline())
    path = tmp_path / "r.json"
    assert main(["eval", "--suite", "compositional", "--json", str(path)]) == 0
    report = json.loads(path.read_text())
    assert tuple(report["categories"]) == CATEGORIES
    assert report["overall"] == pytest.approx(sum(report["categories"].values()) / 6)
    assert report["overall"] >= 0.99
    out = capsys.readouterr().out
    assert all(c in out for c in CATEGORIES) and "overall" in out
    assert f"{12 * COMPOSITIONAL_SEEDS}" in out


def test_padding_gets_no_attention_once_masked():
    from minidiff.pipeline import Pipeline
    from minidiff.schedule import make_schedule
    from minidiff.shapes import vocabulary
    from minidiff.text import TextEncoder, TextEncoderConfig, Tokenizer
    from minidiff.unet import UNet, UNetConfig

    torch.manual_seed(0)
    tokenizer = Tokenizer(vocabulary())
    encoder = TextEncoder(TextEncoderConfig(vocab_size=len(tokenizer), dim=16, layers=1, heads=2)).eval()
    shares = {}
    for masked in (False, True):
        unet = UNet(UNetConfig(in_channels=3, base_channels=8, channel_mults=(1, 2), attention_levels=(0, 1),
                               text_dim=16, heads=2, mask_padding=masked)).eval()
        pipe = Pipeline(unet, encoder, tokenizer, make_schedule("cosine", 1000), None, resolution=16)
        shares[masked] = padding_attention_share(pipe, "a red circle and a blue square", steps=2)
    assert shares[True] == 0.0
    assert 0.2 < shares[False] < 1.0  # 22 of 32 keys are padding, all zero rows: they still draw attention
    # unmasked=True undoes the mask for one measurement: as much padding attention as a model without
    # the mask whose pad rows are the encoder's own, and the pipeline is masked again afterwards
    before = padding_attention_share(pipe, "a red circle and a blue square", steps=2, unmasked=True)
    assert 0.2 < before < 1.0 and pipe.unet.config.mask_padding and "encode" not in vars(pipe)
    assert padding_attention_share(pipe, "a red circle and a blue square", steps=2) == 0.0
