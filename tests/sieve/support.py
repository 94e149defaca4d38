"""Helpers for the Sieve tests: run a script over a message."""

from __future__ import annotations

import datetime

from mailserver.sieve.checker import compile_script
from mailserver.sieve.interpreter import Environment, Limits, run
from mailserver.sieve.message import SieveEnvelope, SieveMessage

MESSAGE = (
    b"Date: Tue, 1 Apr 1997 09:06:31 -0800 (PST)\n"
    b"From: coyote@desert.example.org\n"
    b"To: roadrunner@acme.example.com\n"
    b"Cc: Bob <bob+friends@example.com>, carol@example.com\n"
    b"Subject: I have a present for you\n"
    b"X-Caffeine: C8H10N4O2\n"
    b"\n"
    b"Look, I'm sorry about the whole anvil thing, and I really\n"
    b"didn't mean to try and drop it on you from the top of the\n"
    b"cliff.  I want to try to make it up to you.\n"
)
NOW = datetime.datetime(2026, 12, 4, 16, 30, 5, tzinfo=datetime.timezone.utc)


def sieve(script, message=MESSAGE, sender="coyote@desert.example.org",
          recipient="roadrunner@acme.example.com", includes=None, limits=Limits(), delimiter="+"):
    """The actions of C{script} (text) over C{message}."""
    compiled = compile_script(script)

    def load(location, name):
        text = (includes or {}).get((location, name))
        return None if text is None else compile_script(text)

    env = Environment(SieveMessage(message), SieveEnvelope(sender, recipient), delimiter, NOW, load, limits)
    return run(compiled, env)
