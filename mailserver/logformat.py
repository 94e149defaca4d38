"""
A cheaper formatter for twistd's log file, with the same output.

twistd writes each event through C{textFileLogObserver}, whose formatter
builds a time zone and a C{datetime} and calls C{strftime} for every line
(17% of the reactor thread's time in a delivery profile, with one line per
message), then runs the event's format string through Twisted's
formatter.  L{ClassicFormat} formats the timestamp once per second and
takes a short path for events whose format is one field holding text (the
delivery summary line); anything else goes to Twisted's own formatter.
L{speed_up_twistd_log} swaps it into the observer twistd installed.
L{QuickLogger} is a C{Logger} whose C{emit} skips the costly level check.
"""

from __future__ import annotations

import math
import re
from time import time

from twisted.application.service import Service
from twisted.logger import (
    FileLogObserver,
    Logger,
    LogLevel,
    LogPublisher,
    formatEventAsClassicLogText,
    formatTime,
    globalLogPublisher,
    timeFormatRFC3339,
)

_ONE_FIELD = re.compile(r"\{(\w+)\}\Z")


class ClassicFormat:
    """C{formatEventAsClassicLogText} with a timestamp cached for its second."""

    def __init__(self, time_format: str | None = timeFormatRFC3339) -> None:
        self.time_format = time_format
        self._second: int | None = None
        self._stamp = "-"
        self._fields: dict[str, str | None] = {}  # format -> its one field, or None (a few hundred formats)
        self._systems: dict[tuple, str] = {}  # (namespace, level) -> "namespace#level"

    def stamp(self, when: float | None) -> str:
        """The event time as text; C{strftime} runs once per second of log time."""
        if when is None or self.time_format is None:
            return "-"
        second = math.floor(when)
        if second != self._second:
            self._stamp = formatTime(second, self.time_format)
            self._second = second
        return self._stamp

    def __call__(self, event: dict) -> str | None:
        text = self._simple_text(event)
        if text is None:
            return formatEventAsClassicLogText(event, formatTime=self.stamp)
        system = event.get("log_system")
        if system is None:
            key = (event.get("log_namespace", "-"), event.get("log_level"))
            system = self._systems.get(key)
            if system is None:
                if len(self._systems) >= 1000:
                    self._systems.clear()
                system = self._systems[key] = f"{key[0]}#{'-' if key[1] is None else key[1].name}"
        line = f"{self.stamp(event.get('log_time'))} [{system}] {text}"
        return line.replace("\n", "\n\t") + "\n"

    def _simple_text(self, event: dict) -> str | None:
        """The text of an event whose format is C{"{field}"} with a str value, else None."""
        fmt = event.get("log_format")
        if not isinstance(fmt, str) or "log_failure" in event:
            return None
        try:
            field = self._fields[fmt]
        except KeyError:
            match = _ONE_FIELD.match(fmt)
            if len(self._fields) >= 1000:
                self._fields.clear()
            field = self._fields[fmt] = None if match is None else match.group(1)
        if field is None:
            return None
        value = event.get(field)
        return value if type(value) is str and value else None


def _twistd_time_format(observer: FileLogObserver) -> tuple[bool, str | None]:
    """(True, its time format) if C{observer} was made by C{textFileLogObserver}."""
    format_event = observer.formatEvent
    code = getattr(format_event, "__code__", None)
    if getattr(format_event, "__qualname__", "") != "textFileLogObserver.<locals>.formatEvent" or code is None:
        return False, None
    cells = dict(zip(code.co_freevars, format_event.__closure__ or ()))
    if "timeFormat" not in cells:
        return False, None
    return True, cells["timeFormat"].cell_contents


def speed_up_twistd_log(publisher: LogPublisher = globalLogPublisher) -> int:
    """
    Give every observer of C{publisher} made by C{textFileLogObserver} (what
    twistd's C{--logfile} and stdout logging use) a L{ClassicFormat} with
    the same time format.  Observers given with C{--logger} are left alone.
    Returns how many were changed.

    Reads the publisher's private observer list: pinned by
    C{tests.test_logformat}, so a Twisted upgrade that changes it fails there.
    """
    changed = 0
    for observer in list(getattr(publisher, "_observers", ())):
        if isinstance(observer, FileLogObserver):
            made_by_twisted, time_format = _twistd_time_format(observer)
            if made_by_twisted:
                observer.formatEvent = ClassicFormat(time_format)
                changed += 1
    return changed


class FastLogFormat(Service):
    """Swaps the faster formatter in when the service starts (twistd's logging has begun)."""

    name = "log-format"

    def __init__(self, publisher: LogPublisher = globalLogPublisher) -> None:
        self._publisher = publisher

    def startService(self) -> None:
        super().startService()
        speed_up_twistd_log(self._publisher)


#: Every valid level, for L{QuickLogger.emit}'s check.
_LEVELS = frozenset(LogLevel.iterconstants())


class QuickLogger(Logger):
    """
    A C{Logger} for lines logged per message: C{emit} hands the observer the
    very event C{Logger.emit} builds (the same fields, C{log_trace} kept),
    without its level check, which sorts every C{LogLevel} each time (most
    of its cost).  An unknown level still goes through C{Logger.emit}, which
    reports it.
    """

    def emit(self, level: LogLevel, format: str | None = None, **kwargs: object) -> None:
        if level not in _LEVELS:
            super().emit(level, format, **kwargs)
            return
        kwargs["log_logger"] = self
        kwargs["log_level"] = level
        kwargs["log_namespace"] = self.namespace
        kwargs["log_source"] = self.source
        kwargs["log_format"] = format
        kwargs["log_time"] = time()
        if "log_trace" in kwargs:
            kwargs["log_trace"].append((self, self.observer))  # type: ignore[attr-defined]
        self.observer(kwargs)
