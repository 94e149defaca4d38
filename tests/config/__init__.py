"""Tests for mailserver.config."""
