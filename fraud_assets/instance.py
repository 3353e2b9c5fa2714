"""Write `$DAGSTER_HOME/dagster.yaml`: local storage by default, PostgreSQL when configured.

`python -m fraud_assets.instance` (run by `make` before any dagster command) picks PostgreSQL
storage (dagster-postgres) when `DAGSTER_POSTGRES_URL` is set, and Dagster's local SQLite storage
under `DAGSTER_HOME` otherwise. Telemetry is off: nothing leaves the machine.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from fraud_core.settings import PROJECT_ROOT

LOCAL = """\
# Written by `python -m fraud_assets.instance`: local SQLite storage under DAGSTER_HOME.
telemetry:
  enabled: false
"""

POSTGRES = """\
# Written by `python -m fraud_assets.instance`: PostgreSQL storage (DAGSTER_POSTGRES_URL).
storage:
  postgres:
    postgres_url:
      env: DAGSTER_POSTGRES_URL
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
telemetry:
  enabled: false
"""


def dagster_home() -> Path:
    return Path(os.environ.get("DAGSTER_HOME") or PROJECT_ROOT / ".dagster_home")


def render(postgres_url: str | None) -> str:
    return POSTGRES if postgres_url else LOCAL


def write(home: Path | None = None, postgres_url: str | None = None) -> Path:
    home = home or dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    path = home / "dagster.yaml"
    path.write_text(render(postgres_url))
    return path


def main() -> int:
    url = os.environ.get("DAGSTER_POSTGRES_URL") or None
    path = write(postgres_url=url)
    kind = "PostgreSQL (DAGSTER_POSTGRES_URL)" if url else "local SQLite"
    print(f"Dagster instance: {path} ({kind})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
