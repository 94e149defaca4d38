"""Sieve (RFC 5228 and extensions): parser, interpreter, scripts on disk, vacation."""
