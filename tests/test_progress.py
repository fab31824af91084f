"""The shared progress bar draws on a terminal only, and iterates the same either way."""

from __future__ import annotations

import io
import sys

from msccl.progress import progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bar_draws_counts_on_a_terminal_and_nothing_otherwise(monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert list(progress(range(5), desc="checking")) == list(range(5))
    assert "checking" in terminal.getvalue() and "0/5" in terminal.getvalue()  # the count and total

    quiet = Terminal()
    monkeypatch.setattr(sys, "stderr", quiet)
    assert list(progress(range(5), desc="checking", quiet=True)) == list(range(5))
    piped = io.StringIO()  # not a terminal: a log file or CI
    monkeypatch.setattr(sys, "stderr", piped)
    assert list(progress(range(5), desc="checking")) == list(range(5))
    assert quiet.getvalue() == piped.getvalue() == ""
