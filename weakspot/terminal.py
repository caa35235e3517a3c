"""The command line's rich consoles, one pair for every subcommand.

Piped output (CI logs, ``> file``) would otherwise be cut at rich's 80-column default and the robustness
tables' group names squeezed into stubs, so a stream that is not a terminal gets ``PIPED_WIDTH`` columns
unless ``COLUMNS`` says otherwise.
"""

from __future__ import annotations

import os
import sys

from rich.console import Console

PIPED_WIDTH = 200


def make_console(stderr: bool = False) -> Console:
    """A console for stdout (or stderr) with the piped width applied when it is not a terminal."""
    stream = sys.stderr if stderr else sys.stdout
    piped = not stream.isatty() and "COLUMNS" not in os.environ
    return Console(stderr=stderr, width=PIPED_WIDTH if piped else None)


console = make_console()
error_console = make_console(stderr=True)
