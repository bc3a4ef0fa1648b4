"""Errors that the command line reports as one line, without a traceback."""

import numpy as np


class InfinimodalError(Exception):
    """A user-facing problem: bad input, a missing file, an impossible setting."""


class DataError(InfinimodalError):
    """A data set or file that cannot be read or is malformed; the message names the file."""


class TrainingInterrupted(InfinimodalError):
    """Training stopped before its last epoch (SIGTERM); the run directory can be resumed."""


def format_rows(bad, limit: int = 10) -> str:
    """'3, 17, 40 and 12 more': the indices of the true entries of a boolean row vector, for error messages."""
    idx = np.flatnonzero(bad)
    shown = ", ".join(str(i) for i in idx[:limit])
    return shown + (f" and {len(idx) - limit} more" if len(idx) > limit else "")
