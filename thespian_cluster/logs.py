"""Logging: loguru everywhere, with Thespian's own records routed into it.

:func:`configure_logging` runs in the process that starts a node, before the actor
system forks its admin: every actor process is forked from there and inherits the
sinks. Records that actors send through the standard ``logging`` module travel to
Thespian's logger process, whose ``logDefs`` (from :func:`thespian_log_defs`) hand
them to :class:`LoguruHandler`. Thespian's internal diagnostics file
(``thespian.log``) moves from the shared temp dir into the node's directory.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from loguru import logger

FORMAT = (
    "{time:HH:mm:ss.SSS} | {level: <7} | {extra[node]: <10} | "
    "{process.id: >6} | {name}:{line} | {message}"
)


class LoguruHandler(logging.Handler):
    """A standard-logging handler that re-emits each record through loguru."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno

        # Show where the record was made, not this handler.
        def locate(loguru_record: Any) -> None:
            loguru_record.update(name=record.name, function=record.funcName, line=record.lineno)

        located = logger.patch(locate)
        located.opt(exception=record.exc_info).log(level, record.getMessage())


def configure_logging(node: str, level: str, log_file: Path | None, stderr: bool = True) -> None:
    """Send this process's (and its future children's) logs to stderr and ``log_file``."""
    logger.remove()
    logger.configure(extra={"node": node})
    if stderr:
        logger.add(sys.stderr, level=level, format=FORMAT, backtrace=False)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        logger.add(str(log_file), level=level, format=FORMAT, backtrace=False)


def move_thespian_internal_log(node_dir: Path) -> None:
    """Keep Thespian's internal log out of the shared temp dir (read at fork)."""
    os.environ["THESPLOG_FILE"] = str(node_dir / "thespian-internal.log")
    os.environ.setdefault("THESPLOG_THRESHOLD", "WARNING")


def thespian_log_defs(level: str) -> dict[str, Any]:
    """``logDefs`` for ``ActorSystem``: every standard-logging record goes to loguru."""
    std_level = logging.getLevelName(level) if level in logging.getLevelNamesMapping() else "INFO"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"loguru": {"class": f"{__name__}.LoguruHandler", "level": std_level}},
        "root": {"handlers": ["loguru"], "level": std_level},
    }
