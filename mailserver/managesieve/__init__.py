"""ManageSieve (RFC 5804): scripts of a user, over the same portal and TLS policy as IMAP."""
