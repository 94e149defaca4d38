"""Tests for the cheaper twistd log formatter: same lines as Twisted's, fewer strftime calls."""

from __future__ import annotations

import io

from twisted.logger import (
    FileLogObserver,
    Logger,
    LogLevel,
    LogPublisher,
    formatEventAsClassicLogText,
    jsonFileLogObserver,
    textFileLogObserver,
)
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from mailserver import logformat
from mailserver.logformat import ClassicFormat, FastLogFormat, QuickLogger, speed_up_twistd_log

T0 = 1_764_000_000.25

EVENTS = [
    {"log_format": "{delivery_line}", "delivery_line": "Q1: from=<a@b>, status=sent (x)",
     "log_namespace": "mailserver.delivery", "log_level": LogLevel.info, "log_time": T0},
    {"log_format": "{n} messages from {ip}", "n": 3, "ip": "192.0.2.1",
     "log_namespace": "mailserver.smtp", "log_level": LogLevel.warn, "log_time": T0 + 0.5},
    {"log_format": "{log_text}", "log_text": "legacy\nline", "log_system": "-", "log_time": T0 + 1},
    {"log_format": "{line}", "line": "", "log_time": T0},
    {"log_format": "{line}", "line": 42, "log_time": T0},
    {"log_format": "{missing}", "log_time": T0},
    {"log_format": "{f!r}", "f": "x", "log_time": T0},
    {"log_format": "no time {x}", "x": "y"},
    {"log_format": "{line}", "line": "with {braces}", "log_time": T0, "log_namespace": "n"},
    {"no": "format"},
]


class ClassicFormatTests(SynchronousTestCase):
    def test_same_text_as_twisted(self) -> None:
        fast = ClassicFormat()
        for event in EVENTS:
            self.assertEqual(fast(dict(event)), formatEventAsClassicLogText(dict(event)), event)

    def test_failure_still_has_traceback(self) -> None:
        try:
            1 / 0
        except ZeroDivisionError:
            failure = Failure()
        event = {"log_format": "{line}", "line": "oops", "log_failure": failure, "log_time": T0}
        text = ClassicFormat()(event)
        self.assertIn("ZeroDivisionError", text)
        self.assertEqual(text, formatEventAsClassicLogText(dict(event)))

    def test_regression_timestamp_formatted_once_per_second(self) -> None:
        """Issue 15: strftime ran for every log line; now once per second of log time."""
        calls = []
        real = logformat.formatTime

        def counting(when, time_format):
            calls.append(when)
            return real(when, time_format)

        self.patch(logformat, "formatTime", counting)
        fast = ClassicFormat()
        for i in range(100):
            fast({"log_format": "{line}", "line": "x", "log_time": T0 + i / 200})
        self.assertEqual(len(calls), 1)
        fast({"log_format": "{line}", "line": "x", "log_time": T0 + 1})
        self.assertEqual(len(calls), 2)

    def test_no_time_format(self) -> None:
        self.assertEqual(ClassicFormat(None)({"log_format": "{a}", "a": "b", "log_time": T0}), "- [-#-] b\n")


class SpeedUpTests(SynchronousTestCase):
    def test_replaces_formatter_of_text_file_observer(self) -> None:
        """Pins Twisted internals we rely on: LogPublisher._observers and textFileLogObserver's closure."""
        out = io.StringIO()
        publisher = LogPublisher()
        observer = textFileLogObserver(out, timeFormat="%H:%M:%S")
        publisher.addObserver(observer)
        self.assertEqual(speed_up_twistd_log(publisher), 1)
        self.assertIsInstance(observer.formatEvent, ClassicFormat)
        self.assertEqual(observer.formatEvent.time_format, "%H:%M:%S")
        publisher(dict(EVENTS[0]))
        reference = textFileLogObserver(io.StringIO(), timeFormat="%H:%M:%S").formatEvent(dict(EVENTS[0]))
        self.assertEqual(out.getvalue(), reference)

    def test_other_observers_left_alone(self) -> None:
        publisher = LogPublisher()
        custom = FileLogObserver(io.StringIO(), lambda event: "custom\n")
        json_observer = jsonFileLogObserver(io.StringIO())
        other = []
        for observer in (custom, json_observer, other.append):
            publisher.addObserver(observer)
        self.assertEqual(speed_up_twistd_log(publisher), 0)
        self.assertEqual(custom.formatEvent({}), "custom\n")

    def test_service_swaps_at_start(self) -> None:
        publisher = LogPublisher()
        observer = textFileLogObserver(io.StringIO())
        publisher.addObserver(observer)
        service = FastLogFormat(publisher)
        self.assertNotIsInstance(observer.formatEvent, ClassicFormat)
        service.startService()
        self.assertIsInstance(observer.formatEvent, ClassicFormat)


class _Owner:
    """A class with both loggers as attributes (bound to each instance, as Twisted's descriptor does)."""

    twisted = Logger()
    quick = QuickLogger()


class QuickLoggerTests(SynchronousTestCase):
    """L{QuickLogger.emit} gives the observer the event C{Logger.emit} would (issue 15)."""

    def _event(self, logger: Logger, method: str, *args: object, **kwargs: object) -> tuple[dict, Logger]:
        events: list[dict] = []
        logger.observer = events.append
        getattr(logger, method)(*args, **kwargs)
        self.assertEqual(len(events), 1)
        return events[0], logger

    def _assert_same(self, quick: tuple[dict, Logger], twisted: tuple[dict, Logger]) -> None:
        (fast, fast_logger), (slow, slow_logger) = quick, twisted
        self.assertEqual(list(fast), list(slow))  # the same fields, in the same order
        for key in slow:
            if key == "log_time":
                self.assertLess(abs(fast[key] - slow[key]), 5)
            elif key in ("log_logger", "logger"):  # "logger": the bad-level report's own field
                self.assertIs(fast[key], fast_logger)
                self.assertIs(slow[key], slow_logger)
            elif key == "log_trace":
                self.assertEqual(fast[key], [(fast_logger, fast_logger.observer)])
                self.assertEqual(slow[key], [(slow_logger, slow_logger.observer)])
            elif key == "log_failure":
                self.assertEqual(fast[key].value.args, slow[key].value.args)
            else:
                self.assertEqual(fast[key], slow[key], key)

    def test_same_event_as_logger_emit(self) -> None:
        """Every level and call style, a module's logger and one bound to an instance: the same fields."""
        owner = _Owner()
        pairs = [
            (lambda: QuickLogger(namespace="mailserver.delivery"), lambda: Logger(namespace="mailserver.delivery")),
            (lambda: QuickLogger(namespace="n", source="src"), lambda: Logger(namespace="n", source="src")),
            (lambda: owner.quick, lambda: owner.twisted),
        ]
        for quick, twisted in pairs:
            for level in LogLevel.iterconstants():
                call = ("emit", level, "{delivery_line}")
                fields = {"delivery_line": "Q1: from=<a@b>", "queue_id": "Q1", "delay": None}
                with self.subTest(level=level.name, namespace=quick().namespace):
                    self._assert_same(self._event(quick(), *call, **fields), self._event(twisted(), *call, **fields))
                    named = (level.name, "{n} things")
                    self._assert_same(self._event(quick(), *named, n=2), self._event(twisted(), *named, n=2))
        self.assertEqual(_Owner().quick.namespace, _Owner().twisted.namespace.replace("twisted", "quick"))
        self.assertIsInstance(owner.quick, QuickLogger)
        self.assertIs(owner.quick.source, owner)

    def test_trace_and_bad_level_as_logger_emit(self) -> None:
        """C{log_trace} gets the logger appended; an unknown level is reported as C{Logger.emit} reports it."""
        quick_trace: list = []
        quick = self._event(QuickLogger(namespace="n"), "info", "x", log_trace=quick_trace)
        twisted_trace: list = []
        twisted = self._event(Logger(namespace="n"), "info", "x", log_trace=twisted_trace)
        self._assert_same(quick, twisted)
        self._assert_same(self._event(QuickLogger(namespace="n"), "emit", "nonsense", "x"),
                          self._event(Logger(namespace="n"), "emit", "nonsense", "x"))
