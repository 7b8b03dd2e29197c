"""Progress bars for the CLI: one tqdm bar per stage (training, a sweep, a landscape, a scan) on
stderr, only when stderr is a terminal. Piped or redirected, the CLI is silent: logs and ``--json``
consumers get no bar characters, and stdout is never touched."""

from __future__ import annotations

import os
import sys
from typing import TextIO

from tqdm import tqdm

from pruning.train import Progress

STEPS = 1000  # a bar counts thousandths of its stage: the engine reports fractions in [0, 1]
DEFAULT_SIZE = (100, 24)
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]{postfix}"  # tqdm writes ", " + message
_open: list[tqdm] = []


def is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def size(stream: TextIO) -> tuple[int, int]:
    """The terminal's (columns, rows); one that reports none (a fresh pseudo-terminal says 0 x 0,
    where tqdm would draw nothing) gets ``DEFAULT_SIZE``."""
    try:
        columns, rows = os.get_terminal_size(stream.fileno())
    except (AttributeError, OSError, ValueError):
        columns = rows = 0
    return columns or DEFAULT_SIZE[0], rows or DEFAULT_SIZE[1]


def stage_bar(what: str, stream: TextIO | None = None) -> Progress | None:
    """A ``Progress`` drawing a bar named ``what`` on ``stream`` (stderr by default) with the
    stage's latest message beside it; None when the stream is not a terminal. The bar closes
    when its stage reaches 1, or at ``close_bars``."""
    stream = stream if stream is not None else sys.stderr
    if not is_terminal(stream):
        return None
    columns, rows = size(stream)
    bar = tqdm(total=STEPS, desc=what, file=stream, ncols=columns, nrows=rows, mininterval=0.1, bar_format=BAR_FORMAT)
    _open.append(bar)

    def report(fraction: float, message: str) -> None:
        if bar not in _open:
            return
        steps = round(min(max(fraction, 0.0), 1.0) * STEPS)
        bar.set_postfix_str(message, refresh=False)
        bar.update(steps - bar.n)
        if steps >= STEPS:
            _close(bar)

    return report


def _close(bar: tqdm) -> None:
    if bar in _open:
        _open.remove(bar)
        bar.close()


def close_bars() -> None:
    """Close every bar still open (a command that stopped early, on an error): the terminal's
    next line starts clean."""
    for bar in list(_open):
        _close(bar)
