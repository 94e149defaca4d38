"""Tests for mailserver.auth and the user command."""
