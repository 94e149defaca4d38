"""
Property tests (hypothesis) over the pure parsers and the command lines of
the protocols: a parser raises only its documented error, a parse of an
input under 10 KB takes under a second of CPU, and memory stays bounded.

Profiles (environment variable C{HYPOTHESIS_PROFILE}):

- C{ci} (default): few examples, derandomized, so the whole package runs
  in well under 20 s on the 2-core CI machine and never flakes;
- C{long}: thousands of random examples per property, for local runs::

      HYPOTHESIS_PROFILE=long python -m twisted.trial tests.fuzz
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=40,
    derandomize=True,
    deadline=None,  # timing is checked per example by tests.fuzz.bounds, on CPU time
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "long",
    max_examples=5000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
