"""The milter client: the MTA side of the Sendmail milter protocol, version 6."""
