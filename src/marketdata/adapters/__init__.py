"""Implementations of the domain's ports: PostgreSQL, clocks, files, settings."""
