"""The command line: help, exit status 2 with a one-line message for bad input, sample writes a PNG."""

import dataclasses
import shutil
import subprocess
import sys

import pytest
import torch

from minidiff import cli
from minidiff.checkpoint import load_checkpoint
from minidiff.pipeline import WEIGHTS_DIR


def run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "minidiff", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_help_lists_every_command():
    out = run("--help").stdout
    for command in ("sample", "train", "eval", "grade", "figures"):
        assert command in out


@pytest.mark.parametrize("args,message", [
    (["train", "--preset", "huge"], "--preset='huge' is not known"),
    (["sample", "a red circel", "--weights", "/nonexistent"], "is not a folder"),
])
def test_bad_input_exits_2_without_a_traceback(args, message):
    result = run(*args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_the_shipped_weights_are_listed():
    assert (WEIGHTS_DIR / "manifest.json").exists()


@pytest.mark.parametrize("args,message", [
    (["sample", "a large red circel"], "circel"),
    (["sample", "a red circle", "--steps", "0"], "steps=0"),
    (["sample", "a red circle", "--guidance", "-1"], "--guidance=-1.0"),
    (["sample", "a red circle", "--height", "30"], "height=30"),
    (["sample", "a red circle", "--sampler", "plms"], "sampler='plms'"),
    (["sample", "a red circle", "--scale", "0"], "--scale=0"),
])
def test_sample_bad_input(args, message):
    result = run(*args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def test_sample_writes_a_png_and_prints_its_path(tmp_path):
    out = tmp_path / "grid.png"
    result = run("sample", "a large red circle at the top left on a blue background", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out) and out.stat().st_size > 0
    assert [line.split(":")[0] for line in result.stderr.splitlines() if line.startswith("judge")] == [
        f"judge, seed {seed}" for seed in range(4)]


def test_judge_lines_read_real_renders_back():
    from minidiff.judge import judge_lines
    from minidiff.shapes import parse_caption, render

    prompt = "a large red circle at the top left on a blue background"
    image = render([parse_caption(prompt)], 32)  # (1, 3, 32, 32): exactly what the prompt asks for
    assert judge_lines(image, [prompt], [7]) == [f"judge, seed 7: ok     {prompt}"]
    wrong = "a large green square at the bottom right on a white background"
    assert judge_lines(image, [wrong], [7]) == [f"judge, seed 7: MISSED {prompt}"]


def test_train_then_sample_from_the_run(tmp_path):
    run_dir = tmp_path / "run"
    # one thread, as this test process has (conftest), so the resumed run below can be bitwise equal
    result = run("train", "--preset", "tiny", "--out", str(run_dir), "--device", "cpu", "--threads", "1")
    assert result.returncode == 0, result.stderr
    assert "step=20" in result.stdout and f"--weights {run_dir}" in result.stdout
    written = {p.name for p in run_dir.iterdir()}
    assert {"run.json", "text_encoder.safetensors", "vae.safetensors", "unet.safetensors",
            "unet_state.safetensors", "manifest.json"} <= written
    out = tmp_path / "grid.png"
    result = run("sample", "a red circle", "--weights", str(run_dir), "--steps", "2", "--num-images", "1",
                 "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert out.stat().st_size > 0
    # a run stopped by --minutes continues with --resume alone (its settings come from its checkpoint)
    # and ends bitwise equal to the uninterrupted run
    stopped = tmp_path / "stopped"
    assert cli.main(["train", "--preset", "tiny", "--out", str(stopped), "--device", "cpu",
                     "--minutes", "1e-6"]) == 0
    assert load_checkpoint(stopped / "unet_state")[1]["extra"]["step"] < 20
    assert cli.main(["train", "--resume", "--out", str(stopped), "--device", "cpu"]) == 0
    a, b = load_checkpoint(run_dir / "unet_state")[0], load_checkpoint(stopped / "unet_state")[0]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # resuming the finished run says so, with its last loss, and trains nothing
    result = run("train", "--resume", "--out", str(run_dir), "--device", "cpu")
    assert result.returncode == 0 and "already finished: step 20 of 20, loss" in result.stdout, result.stderr
    assert "nan" not in result.stdout
    # a copy of the run with one flipped data byte is refused, naming the file
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    data = bytearray((copy / "text_encoder.safetensors").read_bytes())
    data[-5] ^= 0x01
    (copy / "text_encoder.safetensors").write_bytes(bytes(data))
    result = run("sample", "a red circle", "--weights", str(copy), "--steps", "2",
                 "--out", str(tmp_path / "c.png"))
    assert result.returncode == 2 and "text_encoder.safetensors is corrupt" in result.stderr, result.stderr
    assert not (tmp_path / "c.png").exists()


def test_resume_of_a_finished_run_trains_nothing(tmp_path, capsys):
    from minidiff.checkpoint import save_checkpoint
    from minidiff.runs import train_config

    info = {"step": 20, "loss": 0.0625, "train_config": dataclasses.asdict(train_config("tiny"))}
    save_checkpoint(tmp_path / "unet_state", {"w": torch.zeros(1)}, {}, info)
    assert cli.main(["train", "--resume", "--out", str(tmp_path), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert f"{tmp_path} is already finished: step 20 of 20, loss 0.0625; nothing to train" in out


def test_non_square_sizes_are_checked_and_sampled(tmp_path):
    out = tmp_path / "wide.png"
    result = run("sample", "a red circle", "--height", "32", "--width", "64", "--steps", "2",
                 "--num-images", "1", "--scale", "1", "--out", str(out))
    assert result.returncode == 0, result.stderr
    from PIL import Image

    assert Image.open(out).size == (64 + 2, 32 + 2)  # one image and the grid's 1 px frame
