"""
Mail authentication: DKIM signing and verification, ARC, SPF, DMARC and the
Authentication-Results header.  Parsers are pure; DNS goes through an
injected twisted.names resolver (L{mailserver.mailauth.dns}); dkimpy's CPU
work runs in threads with answers fetched beforehand.
"""
