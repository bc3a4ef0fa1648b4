"""Errors that the command line reports as one line, without a traceback."""


class InfinimodalError(Exception):
    """A user-facing problem: bad input, a missing file, an impossible setting."""


class DataError(InfinimodalError):
    """A data set or file that cannot be read or is malformed; the message names the file."""
