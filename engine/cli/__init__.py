"""The ``mpcsql`` command line: demo, queries, party servers, deployment and operator commands."""

from engine.cli.main import main

__all__ = ["main"]
