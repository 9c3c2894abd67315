"""The autograder behind ``python -m minidiff grade``: exercises/ stubs graded against minidiff itself.

Layout: ``spec`` (what an exercise is), ``references`` (the answers, as adapters over minidiff),
``ex_*`` (cases and known-wrong variants per topic), ``sandbox`` (the child that runs student code
and nothing else), ``runner`` (one isolated process tree per submission), ``compare`` and ``grade``
(judging what came back, in the parent), ``report``, ``check`` (the graders graded), ``command``.
"""

from minidiff.grading.command import main

__all__ = ["main"]
