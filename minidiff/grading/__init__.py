"""The autograder behind ``python -m minidiff grade``: exercises/ stubs graded against minidiff itself.

Layout: ``spec`` (what an exercise is), ``references`` (the answers, as adapters over minidiff),
``ex_*`` (tests and known-wrong variants per topic), ``registry`` (all exercises), ``compare`` and
``context`` (checking a returned value, and the messages), ``guard`` (flagging use of the reference),
``worker`` / ``runner`` (one process per job, with a time limit), ``report``, ``check``, ``command``.
"""

from minidiff.grading.command import main

__all__ = ["main"]
