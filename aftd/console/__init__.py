"""The operator console: static pages served at ``/ui/`` that talk to the REST API with a
session cookie (README, "Operator console")."""

from aftd.console.web import add_console

__all__ = ["add_console"]
