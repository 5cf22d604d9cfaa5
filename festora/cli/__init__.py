"""The `festora` console script: whole events through a running Festora Vision service."""

from festora.cli.app import main

__all__ = ["main"]
