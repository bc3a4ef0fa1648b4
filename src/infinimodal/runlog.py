"""A command's log in its run directory: `log_to` sends the infinimodal and Lightning messages to
DIR/infinimodal.log while a command (or `MultimodalVAE.fit` with an `out_dir`) runs, with the command line and the
version first."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

log = logging.getLogger("infinimodal")


class log_to:
    """Context manager: the infinimodal and Lightning log messages go to `directory`/infinimodal.log while it is
    open. `create`: make the directory (a training run's); otherwise a directory that does not exist is left
    alone (the command will report it)."""

    LOGGERS = ("infinimodal", "lightning.pytorch")

    def __init__(self, directory: str | Path | None, command: str, create: bool = False) -> None:
        self.directory = Path(directory) if directory else None
        self.command = command
        self.create = create
        self.handler: logging.Handler | None = None

    def __enter__(self) -> "log_to":
        from .distributed import is_rank_zero

        if (
            self.directory is None
            or not (self.directory.is_dir() or self.create)
            or not is_rank_zero()
            or self._already_logging()
        ):
            return self  # under DDP, rank 0 keeps the log; `train` logs before `fit` does
        self.directory.mkdir(parents=True, exist_ok=True)
        self.handler = logging.FileHandler(self.directory / "infinimodal.log")
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
        for name in self.LOGGERS:
            logging.getLogger(name).addHandler(self.handler)
        self.level = log.level
        log.setLevel(logging.INFO)
        log.info("%s (infinimodal %s)", self.command, _version())
        return self

    def _already_logging(self) -> bool:
        assert self.directory is not None  # __enter__ asks only with a directory
        path = str((self.directory / "infinimodal.log").resolve())
        return any(getattr(handler, "baseFilename", None) == path for handler in log.handlers)

    def __exit__(self, kind, value, traceback) -> Literal[False]:
        if self.handler is not None:
            if value is not None:
                log.error("failed: %s: %s", type(value).__name__, value)
            else:
                log.info("done")
            for name in self.LOGGERS:
                logging.getLogger(name).removeHandler(self.handler)
            log.setLevel(self.level)
            self.handler.close()
        return False


def _version() -> str:
    from . import __version__

    return __version__
