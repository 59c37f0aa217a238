"""The two ways a command can fail on purpose, and the exit status each one means.

They live apart from ``cli.py`` because ``python -m leadtrail.server.cli`` runs
that module as ``__main__``: a command module importing the classes from
``leadtrail.server.cli`` would get a second copy that ``main()`` never catches.
"""

from __future__ import annotations


class UsageError(Exception):
    """A command-line value that parsed but makes no sense (exit status 2)."""


class CommandError(Exception):
    """A problem the command reports in one line on stderr (exit status 1)."""
