"""
Pure: memoisation of the parsers that see the same text for every message
of a sender domain (SPF and DMARC records, From fields, organizational
domains, Authentication-Results clauses), bounded in entries and in the
length of the text kept.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable, TypeVar

T = TypeVar("T")
Text = TypeVar("Text", str, bytes)

#: Texts longer than this are parsed every time rather than kept.
LONGEST = 2048


def by_text(function: Callable[[Text], T], maxsize: int = 1024, longest: int = LONGEST) -> Callable[[Text], T]:
    """
    C{function} (pure, one text argument, an immutable result) with its
    results for texts of at most C{longest} characters kept, C{maxsize} at
    most (least recently used first out).  Exceptions are not kept: a broken
    record is parsed again, within the same bounds.
    """
    cached = lru_cache(maxsize=maxsize)(function)

    def call(text: Text) -> T:
        return cached(text) if len(text) <= longest else function(text)

    call.__doc__ = function.__doc__
    call.cache_clear = cached.cache_clear  # type: ignore[attr-defined]
    call.cache_info = cached.cache_info  # type: ignore[attr-defined]
    return call


def by_texts(function: Callable[..., T], maxsize: int = 1024, longest: int = LONGEST) -> Callable[..., T]:
    """L{by_text} for a C{function} of several texts, kept when they hold C{longest} characters at most together."""
    cached = lru_cache(maxsize=maxsize)(function)

    def call(*texts: str) -> T:
        return cached(*texts) if sum(map(len, texts)) <= longest else function(*texts)

    call.__doc__ = function.__doc__
    call.cache_clear = cached.cache_clear  # type: ignore[attr-defined]
    call.cache_info = cached.cache_info  # type: ignore[attr-defined]
    return call
