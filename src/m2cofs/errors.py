"""The one exception type the user sees.

Every problem with the user's input (a file, a folder, a flag, a checkpoint) is raised as
:class:`M2CofsError` with a one-line message that names the file and the problem. The CLI prints
it as ``m2cofs: error: <message>`` and exits non-zero; it never shows a traceback for these.
"""

from __future__ import annotations

import os


class M2CofsError(Exception):
    """A clear, user-facing problem with input or settings (one line, names the file)."""

    def __init__(self, message: str, path: str | os.PathLike | None = None):
        message = " ".join(str(message).split())  # always one line
        if path is not None:
            message = f"{os.fspath(path)}: {message}"
        super().__init__(message)
        self.path = None if path is None else os.fspath(path)
