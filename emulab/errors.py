"""The errors emulab shows to users: each carries one clear line, and the CLI turns it into exit code 2."""

from __future__ import annotations


class EmulabError(Exception):
    """Base of every user-facing error."""


class NotRunning(EmulabError):
    """No testbed is running (or its runner died)."""


class AlreadyRunning(EmulabError):
    """A testbed is already running, or a crashed one left state behind."""


class UnknownNode(EmulabError):
    """A node name that the running topology does not have."""


class StartError(EmulabError):
    """The testbed could not be built; everything partially built has been removed."""
