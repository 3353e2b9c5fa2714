"""The tests' servers are started and stopped by `servicectl.process`; these names stay here."""

from servicectl.process import running, stop, tail

__all__ = ["running", "stop", "tail"]
