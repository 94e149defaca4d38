"""
The outbound queue: spool (on disk), manager (when to try), relay (MX and
SMTP client), bounces (RFC 3464), and the maildrop for local submission.
"""
