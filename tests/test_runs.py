"""Runs through the command line: train on any data set, then sample and eval that run."""

import json

import datasets
import pytest
import torch
from PIL import Image

from minidiff import cli
from minidiff.runs import StageFailed, run_config, train_config, train_preset
from minidiff.shapes import Object, Scene, render

CLASSES = {"circle": "red", "square": "blue"}  # two labels, each drawn in its own colour


def class_images(n):
    """``n`` 16 px PIL images alternating between the two classes, at varying positions."""
    positions = ("top left", "top right", "bottom left", "bottom right", "center")
    scenes = [Scene("white", (Object(shape, CLASSES[shape], "large", positions[i % 5]),))
              for i in range(n) for shape in [tuple(CLASSES)[i % 2]]]
    pixels = ((render(scenes, 16) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(p) for p in pixels]


def run_cli(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 0, err[-2000:]
    return out, err


def test_saved_hf_dataset_trains_samples_and_evals(tmp_path, capsys):
    names = tuple(CLASSES)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(names))})
    datasets.Dataset.from_dict({"image": class_images(40), "label": [i % 2 for i in range(40)]},
                               features=features).save_to_disk(str(tmp_path / "saved"))
    run = tmp_path / "run"
    run_cli(capsys, "train", "--preset", "tiny-pixel", "--data", tmp_path / "saved", "--label-column",
            "label", "--caption-template", "a {label}", "--resolution", 16, "--out", run)
    assert {p.name for p in run.iterdir()} >= {"run.json", "judge.json", "text_encoder.json", "unet.json"}
    assert run_config(run).data == str(tmp_path / "saved")
    out, err = run_cli(capsys, "sample", "a circle", "--weights", run, "--num-images", 2, "--steps", 2,
                       "--out", tmp_path / "s.png")
    assert Image.open(tmp_path / "s.png").size[0] > Image.open(tmp_path / "s.png").size[1] > 16
    assert "judge, seed 0:" in err and "judge, seed 1:" in err
    run_cli(capsys, "eval", "--weights", run, "--prompts", 10, "--steps", 2, "--json", tmp_path / "r.json")
    report = json.loads((tmp_path / "r.json").read_text())["data_run"]
    assert 0 <= report["label_adherence"] <= 1 and set(report["per_label"]) == set(names)
    assert report["frechet"] >= 0 and report["frechet_real_floor"] >= 0 and 0 <= report["memorised"] <= 1
    # an unknown word names the word and this run's vocabulary, not the shapes one
    assert cli.main(["sample", "a triangle", "--weights", str(run), "--steps", "2"]) == 2
    err = capsys.readouterr().err
    assert "'triangle'" in err and "circle" in err and "square" in err and "purple" not in err


def test_image_folder_trains_a_latent_run_and_evals_without_labels(tmp_path, capsys):
    folder = tmp_path / "pics"
    folder.mkdir()
    lines = []
    for i, image in enumerate(class_images(24)):
        image.save(folder / f"{i}.png")
        lines.append(f"{i}.png\ta {tuple(CLASSES)[i % 2]} photo on white")
    (folder / "captions.txt").write_text("\n".join(lines))
    run = tmp_path / "run"
    run_cli(capsys, "train", "--preset", "tiny", "--data", folder, "--resolution", 16, "--out", run)
    assert (run / "vae.json").exists() and not (run / "judge.json").exists()
    run_cli(capsys, "sample", "a square photo on white", "--weights", run, "--num-images", 1, "--steps", 2,
            "--out", tmp_path / "s.png")
    out, _ = run_cli(capsys, "eval", "--weights", run, "--prompts", 8, "--steps", 2)
    assert "no labels: only Frechet distance" in out and "memorised" in out


def test_a_stage_that_misses_its_bar_stops_the_run(tmp_path, capsys):
    config = train_config("tiny-pixel", data="digits", data_options={}, resolution=16, judge_bar=1.01)
    with pytest.raises(StageFailed,
                       match=r"judge stage missed its bar: accuracy on 180 held-out images 0\.\d+, "
                                          r"expected >= 1\.01"):
        train_preset(config, tmp_path, device="cpu", progress=False)
    assert not (tmp_path / "text_encoder.json").exists(), "the next stage must not start"
    code = cli.main(["train", "--data", "digits", "--out", str(tmp_path / "cli"), "--resolution", "20"])
    assert code == 2 and "--resolution 20 is not a multiple of 8" in capsys.readouterr().err


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("saved") / "ds"
    features = datasets.Features({"image": datasets.Image(),
                                  "label": datasets.ClassLabel(names=list(CLASSES))})
    datasets.Dataset.from_dict({"image": class_images(12), "label": [i % 2 for i in range(12)]},
                               features=features).save_to_disk(str(path))
    return path


@pytest.mark.parametrize("args, message", [
    (["--data", "no/such/folder.png"], "--data 'no/such/folder.png' does not exist"),
    (["--data", "digits", "--caption-column", "text"], "--data digits takes no column options"),
    (["--data", "{saved}", "--label-column", "kind"],
     "label_column='kind' is not a column of .*['image', 'label']"),
    (["--data", "{saved}"], "give exactly one of caption_column=None and label_column=None"),
    (["--data", "{saved}", "--label-column", "label", "--caption-template", "a pet"],
     r"must contain \{label\}"),
    (["--data", "{saved}", "--label-column", "label", "--channels", "2"], "channels=2 is not allowed"),
    (["--data", "digits", "--resolution", "100"],
     "--resolution 100 is not a multiple of 8|resolution=100 is not allowed"),
    (["--data", "{empty}"], "neither a saved data set .* nor an image folder"),
    (["--preset", "huge"], "--preset='huge' is not known; choose one of .*digits"),
])
def test_bad_data_options_exit_2_with_one_line(tmp_path, capsys, saved, args, message):
    import re

    (tmp_path / "empty").mkdir()
    argv = ["train", *[a.format(saved=saved, empty=tmp_path / "empty") for a in args], "--out",
            str(tmp_path / "run")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and re.search(message, err[0]), err


def test_compositional_preset_trains_on_several_objects_with_attention_at_8x8():
    from minidiff.runs import make_source
    from minidiff.shapes import parse_caption
    from minidiff.unet import UNetConfig

    config = train_config("shapes-compositional")
    _, captions = make_source(config).batch(256, seed=0)
    counts = [len(parse_caption(c).objects) for c in captions]
    assert min(counts) == 1 and max(counts) == 4, counts
    assert sum(parse_caption(c).relation is not None for c in captions) > 10  # relations are drawn
    unet = UNetConfig.from_preset(config.unet, **config.unet_overrides)
    assert unet.attention_levels == (0, 1) and config.latent  # level 0 of a 4x8x8 latent is 8x8


def test_init_fine_tunes_from_another_run_and_reuses_its_frozen_stages(tmp_path, capsys):
    from minidiff.checkpoint import load_checkpoint
    from minidiff.runs import init_folder
    from minidiff.text import load_text_encoder
    from minidiff.training import unet_stage
    from minidiff.vae import load_vae

    first, second = tmp_path / "first", tmp_path / "second"
    run_cli(capsys, "train", "--preset", "tiny", "--out", first, "--threads", "1")
    # the U-Net it builds starts exactly at the first run's (EMA) weights, tensor for tensor
    config = train_config("tiny", init=str(first))
    encoder, tokenizer = load_text_encoder(first / "text_encoder")
    vae = load_vae(str(first / "vae"))
    unet = unet_stage(config, None, encoder, tokenizer, vae, torch.device("cpu")).model
    saved, _ = load_checkpoint(first / "unet")
    assert all(torch.equal(v, saved[k]) for k, v in unet.state_dict().items())
    # a U-Net that adds a text refiner to the init's keeps the refiner's identity initialisation
    refined = train_config("tiny", init=str(first),
                           unet_overrides={**config.unet_overrides, "text_layers": 1})
    unet2 = unet_stage(refined, None, encoder, tokenizer, vae, torch.device("cpu")).model
    assert len(unet2.text_refiner) == 1
    assert all(torch.equal(v, unet2.state_dict()[k]) for k, v in saved.items())
    z, t, cond = torch.randn(2, 4, 8, 8), torch.tensor([10, 900]), torch.randn(2, 5, encoder.config.dim)
    assert torch.equal(unet2(z, t, cond), unet(z, t, cond))
    out, _ = run_cli(capsys, "train", "--preset", "tiny", "--init", first, "--steps", 6, "--lr", 3e-4,
                     "--seed", 1, "--out", second, "--threads", "1")
    assert "text_encoder_s" not in out and "vae_s" not in out and "step=6" in out  # only the U-Net trained
    for name in ("judge", "text_encoder", "vae"):  # byte for byte the first run's
        for suffix in (".json", ".safetensors"):
            assert (second / f"{name}{suffix}").read_bytes() == (first / f"{name}{suffix}").read_bytes()
    tuned, meta = load_checkpoint(second / "unet")
    assert meta["extra"]["train_config"]["init"] == str(first) and meta["extra"]["train_config"]["lr"] == 3e-4
    assert any(not torch.equal(v, saved[k]) for k, v in tuned.items())  # and it did train
    # a U-Net of another shape is refused in one line, naming the tensors that differ
    assert cli.main(["train", "--preset", "shapes-latent", "--init", str(first), "--out", str(tmp_path / "x"),
                     "--threads", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "this run's U-Net config" in err[0] and "wrong shapes" in err[0], err
    assert init_folder("shipped").name == "weights"
    with pytest.raises(ValueError, match="holds no U-Net checkpoint"):
        init_folder(str(tmp_path / "nowhere"))
