"""Helpers that start real servers (DNS, PostgreSQL, IMAP/POP) for tests."""
