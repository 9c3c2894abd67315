"""Every measurement a notebook's text quotes is printed by the notebook itself.

The check lives in benchmarks/run_notebooks.py, which also re-executes the notebooks.
"""

import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from run_notebooks import appears, executed, quoted_numbers, run_time_sentence, unmatched  # noqa: E402

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _notebook(markdown: list[str], printed: str, seconds: int | None = None) -> nbformat.NotebookNode:
    cells = [nbformat.v4.new_markdown_cell(m) for m in markdown]
    code = nbformat.v4.new_code_cell("print(...)")
    code.outputs = [nbformat.v4.new_output("stream", name="stdout", text=printed)]
    nb = nbformat.v4.new_notebook(cells=[*cells, code])
    if seconds is not None:
        nb.metadata["minidiff"] = {"full_mode_seconds": seconds, "threads": 1}
    return nb


def test_quoted_numbers_are_measurements_outside_code():
    text = "In 2020, 3 runs gave 0.12 and 45% (1.9x faster, 2e-9); `lr = 0.003` and ```x = 0.5``` are code."
    assert quoted_numbers(text) == ["0.12", "45%", "1.9x", "2e-9"]
    assert quoted_numbers(run_time_sentence(38, 1) + ", then 0.5") == ["0.5"]


@pytest.mark.parametrize(("quoted", "printed", "expected"), [
    ("0.12", [0.1234], True), ("0.12", [0.126], False), ("0.13", [0.1234], False),
    ("45%", [0.452], True), ("45%", [45.2], True), ("45%", [0.46], False),
    ("1.9x", [1.93], True), ("1.9x", [1.96], False), ("2e-9", [2.2e-9], True), ("2e-9", [3.1e-9], False),
    ("1,034.5", [1034.46], True), ("0.000", [0.0004], True), ("0.000", [0.0006], False),
])
def test_appears_compares_to_the_quoted_digits(quoted, printed, expected):
    assert appears(quoted, printed) is expected


def test_unmatched_names_the_cell_and_the_stale_run_time():
    nb = _notebook([run_time_sentence(38, 1), "loss 0.24 and 76%"], "loss 0.2412\noff-mode: 0.758")
    assert unmatched(nb) == []
    printed = "loss 0.2412\noff-mode: 0.758"
    nb = _notebook([run_time_sentence(40, 1), "loss 0.25 and 49%"], printed, seconds=38)
    assert unmatched(nb) == ["cell 1: 0.25", "cell 1: 49%", "cell 0: the run time is not the measured 38 s"]
    assert not executed(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1")]))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_notebook_quotes_only_its_outputs(path):
    nb = nbformat.read(path, as_version=4)
    if not executed(nb):
        pytest.skip(f"{path.name} has no outputs: python benchmarks/run_notebooks.py {path.name[:2]}")
    assert unmatched(nb) == []
