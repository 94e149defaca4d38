"""Built-in spam and abuse checks: DNSBL scoring, greylisting, rate limits."""
