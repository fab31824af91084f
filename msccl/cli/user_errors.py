"""What a user can cause (a setting, a file, a dataset) is reported in one line and exit status 1; a bug
keeps its traceback. `MSCCL_DEBUG=1` or `--debug` shows the traceback of a user error too."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from lightning.fabric.utilities.exceptions import MisconfigurationException
from tqdm import tqdm

from msccl.data.base import DatasetError

__all__ = ["DEBUG_VARIABLE", "USER_ERRORS", "ConfigError", "one_line_errors"]


class ConfigError(ValueError):
    """A setting that cannot be used as given; the message names its config key."""


DEBUG_VARIABLE = "MSCCL_DEBUG"
"""`MSCCL_DEBUG=1` (or `--debug`) shows the traceback of a user error instead of its one line."""

USER_ERRORS = (ValueError, OSError, DatasetError, MisconfigurationException)
"""What a user can cause by a setting, a file or a dataset: reported in one line. Anything else is a
bug, shown with its traceback."""


@contextmanager
def one_line_errors(debug: bool = False) -> Iterator[None]:
    """Turn a user error into one line on stderr and exit status 1 (the traceback with `debug`)."""
    try:
        yield
    except USER_ERRORS as error:
        if debug:
            raise
        error = _unwrapped(error)
        message = " ".join(str(error).split()) or type(error).__name__
        _end_progress_bar_lines()
        sys.stderr.write(f"msccl: error: {message} (--debug shows the traceback)\n")
        if after := getattr(error, "after", None):  # what to do next, e.g. the command that resumes
            sys.stderr.write(f"{after}\n")
        sys.exit(1)


def _end_progress_bar_lines() -> None:
    """End the line of every progress bar still drawn (a run that failed mid-epoch leaves Lightning's
    open, its cursor after `loss=...]`), so that the error starts a line of its own."""
    streams = {id(bar.fp): bar.fp for bar in list(tqdm._instances) if not bar.disable}  # bars not closed
    for stream in streams.values():
        with suppress(Exception):  # a closed or broken stream: nothing to end
            stream.write("\n")
            stream.flush()


def _unwrapped(error: BaseException) -> BaseException:
    """The user error itself: jsonargparse re-raises a constructor's error (e.g. a data module's) inside
    its own message about union types, with the original as the cause."""
    while True:
        inner = error.__cause__ or error.__context__
        frames = traceback.extract_tb(error.__traceback__)
        wrapped = frames and "jsonargparse" in Path(frames[-1].filename).parts
        if not (wrapped and isinstance(inner, USER_ERRORS)):
            return error
        error = inner
