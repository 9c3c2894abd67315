"""Every notebook runs top to bottom, headless, in fast mode (MINIDIFF_FAST=1); a cell error fails."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


def test_the_notebooks_are_the_twelve_of_the_course():
    assert [p.stem for p in NOTEBOOKS] == [
        "00_quickstart", "01_forward_noising", "02_diffusion_in_2d", "03_unet_denoiser", "04_samplers",
        "05_text_encoder", "06_conditioning_and_guidance", "07_latent_diffusion", "08_seeds_and_resolution",
        "09_what_training_data_decides", "10_the_full_loop", "11_why_is_my_sample_noise",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_fast_mode(path, monkeypatch, tmp_path):
    monkeypatch.setenv("MINIDIFF_FAST", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(path, as_version=4)
    resources = {"metadata": {"path": str(path.parent)}}
    NotebookClient(nb, timeout=600, kernel_name="python3", resources=resources).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors
