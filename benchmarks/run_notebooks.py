"""Re-execute notebooks in full mode, in place, and check that their text quotes only their own outputs.

    python benchmarks/run_notebooks.py                 # every notebook, 1 torch thread
    python benchmarks/run_notebooks.py 09 11           # the notebooks whose names start so
    python benchmarks/run_notebooks.py --threads 2     # torch threads (MINIDIFF_THREADS in the first cell)
    python benchmarks/run_notebooks.py --check         # no execution: only the number check

Each run writes the measured wall time and thread count into the notebook's metadata
(``metadata.minidiff``) and into the first cell's sentence ``**Full-mode run time:** N s measured
with T torch thread(s)``. The number check: every measurement a markdown cell quotes (a number
with a decimal point, a percent sign or a trailing "x", outside backticks) must equal, to the
digits quoted, a number printed by one of the notebook's code cells. Exit status 1 lists the rest.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

import nbformat

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
CELL_TIMEOUT_S = 1800  # one cell of a full run may train for minutes on a busy 2-core machine
RUN_TIME = re.compile(r"\*\*Full-mode run time:\*\* "
                      r"(?:[\d.]+ s measured with \d+ torch threads?|not measured yet[^)]*\))")
CODE = re.compile(r"```.*?```|`[^`]*`", re.S)  # fenced and inline code: names and settings, not measurements
QUOTED = re.compile(r"(?<![\w.])(\d[\d,]*(?:\.\d+)?(?:e-?\d+)?)(%|x(?![\w]))?")
PRINTED = re.compile(r"(?<![\w.])-?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?")


def _value(text: str) -> float:
    return float(text.replace(",", ""))


def quoted_numbers(markdown: str) -> list[str]:
    """The measurements a markdown cell quotes: numbers with a decimal point, a %, an "x" or an exponent."""
    text = RUN_TIME.sub("", CODE.sub("", markdown))
    return [number + (unit or "") for number, unit in QUOTED.findall(text)
            if unit or "." in number or "e" in number]


def printed_numbers(nb: nbformat.NotebookNode) -> list[float]:
    """Every number in the text the code cells printed (streams and text/plain results)."""
    texts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if out.output_type == "stream":
                texts.append(out.text)
            elif "data" in out and "text/plain" in out.data:
                texts.append(out.data["text/plain"])
    return [abs(_value(m)) for text in texts for m in PRINTED.findall(text)]


def appears(quoted: str, printed: list[float]) -> bool:
    """Does ``quoted`` ("0.12", "45%", "1.9x", "2e-9") equal some printed number to the digits quoted?"""
    unit = quoted[-1] if quoted[-1] in "%x" else ""
    number = quoted[: len(quoted) - len(unit)]
    value = _value(number)
    if "e" in number:  # an order of magnitude: the same to the mantissa's digits
        mantissa = number.split("e")[0]
        digits = len(mantissa.split(".")[1]) if "." in mantissa else 0
        return any(p > 0 and f"{p:.{digits}e}" == f"{value:.{digits}e}" for p in printed)
    digits = len(number.split(".")[1]) if "." in number else 0
    half = 0.5 * 10 ** -digits + 1e-12
    scales = (1.0, 100.0) if unit == "%" else (1.0,)  # 45% may be printed as 45.2 or 0.452
    return any(abs(p * s - value) <= half for p in printed for s in scales)


def executed(nb: nbformat.NotebookNode) -> bool:
    """Was the notebook committed with outputs (any code cell has one)?"""
    return any(cell.get("outputs") for cell in nb.cells if cell.cell_type == "code")


def unmatched(nb: nbformat.NotebookNode) -> list[str]:
    """Quoted measurements that no output prints, as "cell N: 0.12", plus a stale run-time sentence."""
    printed = printed_numbers(nb)
    missing = [f"cell {i}: {q}" for i, cell in enumerate(nb.cells) if cell.cell_type == "markdown"
               for q in quoted_numbers(cell.source) if not appears(q, printed)]
    measured = nb.metadata.get("minidiff", {})
    sentence = run_time_sentence(measured["full_mode_seconds"], measured["threads"]) if measured else ""
    if sentence not in nb.cells[0].source:
        missing.append(f"cell 0: the run time is not the measured {measured['full_mode_seconds']} s")
    return missing


def run_time_sentence(seconds: float, threads: int) -> str:
    return f"**Full-mode run time:** {seconds:g} s measured with {threads} torch thread{'s' * (threads != 1)}"


def execute(path: Path, threads: int) -> float:
    """Run ``path`` in full mode; write it back with its outputs and run time; return the seconds."""
    from nbclient import NotebookClient

    os.environ.pop("MINIDIFF_FAST", None)
    os.environ.pop("MPLBACKEND", None)  # the kernel's inline backend, so every figure is kept in the notebook
    os.environ.update(MINIDIFF_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    seconds = round(time.perf_counter() - start)
    nb.metadata["minidiff"] = {"full_mode_seconds": seconds, "threads": threads}
    first = nb.cells[0]
    if not RUN_TIME.search(first.source):
        raise SystemExit(f"{path.name}: its first cell needs the sentence '{run_time_sentence(0, threads)}'")
    first.source = RUN_TIME.sub(run_time_sentence(seconds, threads), first.source)
    nbformat.write(nb, path)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebook name prefixes, e.g. 09 11 (default: all)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--check", action="store_true", help="only check the numbers; execute nothing")
    args = parser.parse_args(argv)
    wanted = tuple(args.names) or ("",)
    paths = sorted(p for p in NOTEBOOKS.glob("*.ipynb") if p.name.startswith(wanted))
    if not paths:
        print(f"no notebook in {NOTEBOOKS} starts with {args.names}", file=sys.stderr)
        return 2
    failed = 0
    for path in paths:
        if not args.check:
            print(f"{path.name}: {execute(path, args.threads)} s with {args.threads} thread(s)", flush=True)
        nb = nbformat.read(path, as_version=4)
        if not executed(nb):
            print(f"{path.name}: not executed, numbers not checked")
            continue
        missing = unmatched(nb)
        failed += bool(missing)
        print(f"{path.name}: " + ("every quoted number is printed" if not missing else
                                   "quoted but not printed: " + ", ".join(missing)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
