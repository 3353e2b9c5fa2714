"""Values as Parquet and JSON files, on a local folder or any fsspec file system (S3 among them).

What the training steps hand each other (frames, splits, scores, reports, models) is written as
a folder of plain files, never a pickle: each frame or 1-D array a Parquet file, a model its bundle
(`fraud_core.bundle`: arrays and XGBoost's JSON), the anomaly forest its arrays, everything else
JSON. `value.json` describes the folder and is written last: a folder without it is unfinished.
Reading builds only the types named in `types` (an allowlist), so a file cannot make this module
construct or import anything else.

On a local folder a value is written to a temporary folder beside it and renamed into place, so a
reader sees the old value or the new one. On an object store, the files are uploaded and
`value.json` last; a reader downloads the folder into a local temporary folder first.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pandas as pd
from fsspec.implementations.local import LocalFileSystem

from fraud_core.bundle import FraudModel, load_bundle, save_bundle
from fraud_core.cards.definition import FeatureDefinition
from fraud_core.features import AnomalyScorer, CompiledForest

FORMAT = 1
DESCRIPTION = "value.json"


class StoredValueError(ValueError):
    """A stored value that cannot be read: missing, unfinished, or of an unknown type."""


def open_root(root: str, storage_options: Mapping[str, Any] | None = None) -> tuple[Any, str]:
    """The file system and the path within it of `root` (a folder, `file://…` or `s3://…`)."""
    fs, path = fsspec.core.url_to_fs(root, **dict(storage_options or {}))
    return fs, str(path).rstrip("/")


def is_local(fs: Any) -> bool:
    return isinstance(fs, LocalFileSystem)


class _Writer:
    """Encodes one value into files of a local folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.names: set[str] = set()

    def _name(self, hint: str, suffix: str) -> str:
        stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in hint) or "value"
        name, n = f"{stem}{suffix}", 1
        while name in self.names:
            n += 1
            name = f"{stem}_{n}{suffix}"
        self.names.add(name)
        return name

    def encode(self, value: Any, hint: str) -> dict[str, Any]:
        if isinstance(value, pd.DataFrame):
            name = self._name(hint, ".parquet")
            value.to_parquet(self.folder / name)
            return {"frame": name}
        if isinstance(value, np.ndarray):
            if value.ndim != 1:
                raise TypeError(f"{hint}: only 1-D arrays are stored, not shape {value.shape}")
            name = self._name(hint, ".parquet")
            pd.DataFrame({"value": value}).to_parquet(self.folder / name, index=False)
            return {"array": name}
        if isinstance(value, FraudModel):
            name = self._name(hint, "")
            save_bundle(value, self.folder / name, dict(value.manifest))
            return {"bundle": name}
        if isinstance(value, AnomalyScorer):
            name = self._name(hint, ".npz")
            value.forest.save(self.folder / name)
            return {"forest": name}
        if isinstance(value, FeatureDefinition):
            return {"feature_definition": value.as_dict()}
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            fields = {
                f.name: self.encode(getattr(value, f.name), f"{hint}.{f.name}")
                for f in dataclasses.fields(value)
                if f.init
            }
            kind = type(value)
            return {"dataclass": f"{kind.__module__}:{kind.__qualname__}", "fields": fields}
        if isinstance(value, Mapping) and not _is_json(value):
            if not all(isinstance(k, str) for k in value):
                raise TypeError(f"{hint}: a mapping of non-text keys cannot be stored")
            return {"mapping": {k: self.encode(v, f"{hint}.{k}") for k, v in value.items()}}
        if _is_json(value):
            return {"json": value}
        raise TypeError(f"{hint}: a {type(value).__name__} cannot be stored as Parquet or JSON")


def _is_json(value: Any) -> bool:
    if value is None or isinstance(value, str | bool | int | float):
        return True
    if isinstance(value, list | tuple):
        return all(_is_json(v) for v in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _is_json(v) for k, v in value.items())
    if isinstance(value, np.generic):
        return isinstance(value.item(), str | bool | int | float)
    return False


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON")


class _Reader:
    """Decodes a value from the files of a local folder."""

    def __init__(self, folder: Path, types: Mapping[str, type]) -> None:
        self.folder = folder
        self.types = types

    def decode(self, encoded: dict[str, Any]) -> Any:
        if "json" in encoded:
            return encoded["json"]
        if "frame" in encoded:
            return pd.read_parquet(self.folder / encoded["frame"])
        if "array" in encoded:
            return pd.read_parquet(self.folder / encoded["array"])["value"].to_numpy()
        if "bundle" in encoded:
            return load_bundle(self.folder / encoded["bundle"], verify=True)
        if "forest" in encoded:
            return AnomalyScorer(CompiledForest.load(self.folder / encoded["forest"]))
        if "feature_definition" in encoded:
            return FeatureDefinition.from_dict(encoded["feature_definition"])
        if "mapping" in encoded:
            return {k: self.decode(v) for k, v in encoded["mapping"].items()}
        if "dataclass" in encoded:
            kind = self.types.get(encoded["dataclass"])
            if kind is None:
                raise StoredValueError(
                    f"{self.folder}: holds a {encoded['dataclass']}, which is not a stored type"
                )
            return kind(**{k: self.decode(v) for k, v in encoded["fields"].items()})
        raise StoredValueError(f"{self.folder}: unknown encoding {sorted(encoded)}")


def type_names(*kinds: type) -> dict[str, type]:
    """The allowlist `read_value` takes: each type under the name `value.json` records."""
    return {f"{k.__module__}:{k.__qualname__}": k for k in kinds}


def write_value(fs: Any, path: str, value: Any, *, note: Mapping[str, Any] | None = None) -> int:
    """Write `value` as the folder `path` of `fs`, replacing what was there; the bytes written."""
    staging = Path(tempfile.mkdtemp(prefix=".value-", dir=_staging_dir(fs, path)))
    try:
        writer = _Writer(staging)
        description = {"format": FORMAT, "value": writer.encode(value, "value"), **(note or {})}
        (staging / DESCRIPTION).write_text(json.dumps(description, default=_json_default))
        size = sum(p.stat().st_size for p in staging.rglob("*") if p.is_file())
        if is_local(fs):
            _replace_local(staging, Path(path))
        else:
            _upload(fs, staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return size


def _staging_dir(fs: Any, path: str) -> str | None:
    if not is_local(fs):
        return None
    parent = Path(path).parent
    parent.mkdir(parents=True, exist_ok=True)
    return str(parent)


def _replace_local(staging: Path, target: Path) -> None:
    # A folder cannot be renamed over a non-empty one: move the old one aside first. A crash in
    # between leaves no value (never a half-written one); the old folder is then left behind.
    old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
    if target.exists():
        os.replace(target, old)
    fresh = staging.with_name(f".{target.name}.new-{uuid.uuid4().hex[:8]}")
    os.replace(staging, fresh)
    os.replace(fresh, target)
    shutil.rmtree(old, ignore_errors=True)


def _upload(fs: Any, staging: Path, path: str) -> None:
    if fs.exists(path):
        fs.rm(path, recursive=True)
    files = [p for p in staging.rglob("*") if p.is_file() and p.name != DESCRIPTION]
    for file in files:
        fs.put_file(str(file), f"{path}/{file.relative_to(staging).as_posix()}")
    fs.put_file(str(staging / DESCRIPTION), f"{path}/{DESCRIPTION}")


def exists(fs: Any, path: str) -> bool:
    """Whether a finished value is at `path`."""
    return bool(fs.exists(f"{path}/{DESCRIPTION}"))


def read_value(fs: Any, path: str, types: Mapping[str, type]) -> Any:
    """The value written at `path`, built from the allowlisted `types` only."""
    if not exists(fs, path):
        raise StoredValueError(f"{path}: no stored value (nothing written there, or unfinished)")
    folder = Path(path) if is_local(fs) else _download(fs, path)
    description = json.loads((folder / DESCRIPTION).read_text())
    if description.get("format") != FORMAT:
        found = description.get("format")
        raise StoredValueError(f"{path}: stored in format {found}, this reads format {FORMAT}")
    return _Reader(folder, types).decode(description["value"])


_DOWNLOADS: list[Path] = []


def _remove_downloads() -> None:
    for folder in _DOWNLOADS:
        shutil.rmtree(folder, ignore_errors=True)


def _download(fs: Any, path: str) -> Path:
    # Kept until the process ends: a loaded bundle reads its history file on demand.
    folder = Path(tempfile.mkdtemp(prefix="fraud-value-"))
    if not _DOWNLOADS:
        atexit.register(_remove_downloads)
    _DOWNLOADS.append(folder)
    for remote in fs.find(path):
        local = folder / str(remote)[len(path.rstrip("/")) + 1 :]
        local.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(remote, str(local))
    return folder
