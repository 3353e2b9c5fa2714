"""Moved: `make stack` is `python -m servicectl.stack` (this name stays for old callers)."""

from servicectl.stack import *  # noqa: F403
from servicectl.stack.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
