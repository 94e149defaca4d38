"""Tests for mailserver.tables."""
