"""Shared helpers for the crawler tests: saved result pages and small utilities."""
