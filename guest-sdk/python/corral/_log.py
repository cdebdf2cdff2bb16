"""The host's log: the standard ``logging`` module, ``print`` and tracebacks all end here."""

import logging
import sys

from wit_world.imports import logging as wit_logging

_LEVELS = [
    (logging.ERROR, wit_logging.Level.ERROR),
    (logging.WARNING, wit_logging.Level.WARN),
    (logging.INFO, wit_logging.Level.INFO),
    (logging.DEBUG, wit_logging.Level.DEBUG),
]


def _level(levelno: int):
    for threshold, level in _LEVELS:
        if levelno >= threshold:
            return level
    return wit_logging.Level.TRACE


def emit(levelno: int, message: str) -> None:
    wit_logging.log(_level(levelno), message)


def error(message: str) -> None:
    emit(logging.ERROR, message)


class HostHandler(logging.Handler):
    """A :class:`logging.Handler` writing each record as one host log line."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            emit(record.levelno, self.format(record))
        except Exception:
            self.handleError(record)


class _Stream:
    """``sys.stdout``/``sys.stderr``: whole lines go to the host log at one level."""

    def __init__(self, levelno: int):
        self.levelno = levelno
        self.pending = ""

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            emit(self.levelno, line)
        return len(text)

    def flush(self) -> None:
        if self.pending:
            emit(self.levelno, self.pending)
            self.pending = ""

    def isatty(self) -> bool:
        return False


def flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, _Stream):
            stream.flush()


def install() -> None:
    root = logging.getLogger()
    if not any(isinstance(h, HostHandler) for h in root.handlers):
        root.addHandler(HostHandler())
        root.setLevel(logging.INFO)
    sys.stdout = _Stream(logging.INFO)
    sys.stderr = _Stream(logging.ERROR)
