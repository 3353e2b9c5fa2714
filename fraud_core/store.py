"""The model store on disk: staging, immutable releases, a `production` symlink, backups.

Layout under the models root (`FRAUD_MODELS_DIR`, default `models/`):

    staging/<version>/            bundles being written and verified
    releases/<version>/           immutable published bundles
    production -> releases/<v>/   what the API serves; switched by one atomic rename
    backups/<UTC time>__<v>/      a copy of each bundle taken out of production

Publishing stages, verifies, backs up, releases, then replaces the `production` symlink with a new
one in a single `os.replace`. A crash at any step leaves `production` pointing at the old bundle,
whole and loadable.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fraud_core.bundle import BundleError, FraudModel, load_bundle, read_manifest, save_bundle


class StoreError(RuntimeError):
    """The model store cannot do what was asked; nothing in production changed."""


@dataclass(frozen=True)
class Published:
    version: str
    path: Path
    previous_version: str | None
    backup: Path | None


class ModelStore:
    def __init__(self, root: Path | str, keep_backups: int = 10) -> None:
        self.root = Path(root)
        self.keep_backups = keep_backups
        self.staging = self.root / "staging"
        self.releases = self.root / "releases"
        self.backups = self.root / "backups"
        self.production = self.root / "production"

    # -- reading ---------------------------------------------------------------------------
    def current_version(self) -> str | None:
        if not self.production.is_symlink() and not self.production.exists():
            return None
        if not self.production.exists():
            raise StoreError(f"{self.production} is a dangling link")
        return str(read_manifest(self.production)["model_version"])

    def load_production(self, verify: bool = True) -> FraudModel | None:
        """The production model, or None when nothing has been published yet."""
        if not self.production.is_symlink() and not self.production.exists():
            return None
        return load_bundle(self.production, verify=verify)

    def list_backups(self) -> list[tuple[Path, dict[str, Any]]]:
        """Backups, oldest first, with their manifests; unreadable ones are skipped."""
        if not self.backups.is_dir():
            return []
        out = []
        for path in sorted(self.backups.iterdir()):
            if path.is_dir() and "__" in path.name:
                try:
                    out.append((path, read_manifest(path)))
                except BundleError:
                    continue
        return out

    # -- writing ---------------------------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time: two promotions must not interleave their switches."""
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def stage(self, model: FraudModel, manifest: dict[str, Any]) -> Path:
        """Write a bundle under staging/, complete, or not at all."""
        version = manifest["model_version"]
        final = self.staging / version
        if final.exists() or (self.releases / version).exists():
            raise StoreError(f"version {version} already exists in {self.root}")
        partial = self.staging / f".{version}.partial-{os.getpid()}"
        if partial.exists():
            shutil.rmtree(partial)
        self.staging.mkdir(parents=True, exist_ok=True)
        save_bundle(model, partial, manifest)
        os.replace(partial, final)
        return final

    def publish(self, staged: Path) -> Published:
        """Verify a staged bundle, back up production, release it, switch production to it."""
        with self._locked():
            # Refuse before touching anything, so the staged bundle is still there to publish
            # once the user has fixed `production`.
            self._check_production()
            model = load_bundle(staged, verify=True)
            version = model.version
            previous = self.current_version()
            backup = self._backup_current(previous)
            release = self._release(staged, version)
            self._switch(release)
            self._prune_backups()
            return Published(version, release, previous, backup)

    def rollback(self, to_version: str | None = None) -> Published:
        """Switch production back to a backed-up bundle (by default, the one before current)."""
        with self._locked():
            current = self.current_version()
            backups = self.list_backups()
            if to_version is None:
                older = [
                    (p, m) for p, m in backups if current is None or m["model_version"] < current
                ]
                if not older:
                    raise StoreError(f"no backup older than {current} in {self.backups}")
                path, manifest = older[-1]
            else:
                matches = [(p, m) for p, m in backups if m["model_version"] == to_version]
                if not matches:
                    raise StoreError(f"no backup of version {to_version} in {self.backups}")
                path, manifest = matches[-1]
            version = manifest["model_version"]
            load_bundle(path, verify=True)
            release = self.releases / version
            if not release.exists():
                self._copy_atomically(path, release)
            load_bundle(release, verify=True)
            self._switch(release)
            return Published(version, release, current, None)

    # -- steps (each one leaves production untouched if it fails) -----------------------------
    def _copy_atomically(self, source: Path, target: Path) -> None:
        partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
        if partial.exists():
            shutil.rmtree(partial)
        shutil.copytree(source, partial)
        os.replace(partial, target)

    def _backup_current(self, previous: str | None) -> Path | None:
        if previous is None:
            return None
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        target = self.backups / f"{stamp}__{previous}"
        self.backups.mkdir(parents=True, exist_ok=True)
        self._copy_atomically(self.production.resolve(), target)
        return target

    def _release(self, staged: Path, version: str) -> Path:
        self.releases.mkdir(parents=True, exist_ok=True)
        release = self.releases / version
        os.replace(staged, release)
        return release

    def _check_production(self) -> None:
        if self.production.exists() and not self.production.is_symlink():
            raise StoreError(
                f"{self.production} is a directory, not the symlink this store manages; "
                f"move it into {self.releases}/<version> and publish again"
            )

    def _switch(self, release: Path) -> None:
        self._check_production()
        link = self.root / f".production.{os.getpid()}.tmp"
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(release.relative_to(self.root), target_is_directory=True)
        os.replace(link, self.production)  # the single atomic step
        fd = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _prune_backups(self) -> None:
        backups = [p for p, _ in self.list_backups()]
        for path in backups[: max(0, len(backups) - self.keep_backups)]:
            shutil.rmtree(path)
