"""Errors a user can fix, and the wrapper that turns them into one-line messages.

Researchers run the stages through `dvc repro`; a traceback for a missing file or a typo in
params.yaml hides the one thing they need to know. Library code raises `UserError` with a message
that names the file or key and what to do; `run_stage` prints it on one line and exits with 2.
"""
from __future__ import annotations

import functools
import sys
from collections.abc import Callable


class UserError(Exception):
    """A problem with the user's input (params, data files) that the message fully explains."""


def run_stage(main: Callable[[], None]) -> Callable[[], None]:
    """Decorate a stage's `main` so that a `UserError` ends it with `error: <message>` and exit 2."""

    @functools.wraps(main)
    def wrapper() -> None:
        try:
            main()
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted: no output was written", file=sys.stderr)
            sys.exit(130)

    return wrapper
