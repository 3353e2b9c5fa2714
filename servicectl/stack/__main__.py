"""`python -m servicectl.stack`: see `servicectl.stack`."""

from servicectl.stack.cli import main

raise SystemExit(main())
