"""The IO manager of every asset: Parquet and JSON under a storage root, a folder or a bucket.

`FRAUD_STORAGE_ROOT` is a local folder (default `$DAGSTER_HOME/storage`, where Dagster's own
pickling IO manager would have written) or an S3-compatible bucket, `s3://bucket/prefix`, through
fsspec and s3fs: the endpoint and credentials come from the environment as for any AWS client
(`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`). Each
asset is a folder `<root>/<asset key>/` (a partitioned asset: `<root>/<asset key>/<partition>/`)
written by `fraud_core.stored`: no asset's value is ever a pickle.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import dagster as dg

from fraud_core import stored


def _stored_types() -> dict[str, type]:
    # The types an asset hands on; read_value builds nothing else.
    from fraud_assets.defs.assets.model import EvaluationReport, TrainedModel
    from fraud_core.data import Splits
    from fraud_core.training import AnomalyFeatures

    return stored.type_names(Splits, AnomalyFeatures, TrainedModel, EvaluationReport)


class ParquetIOManager(dg.ConfigurableIOManager):
    """Each asset (and each partition) as a folder of Parquet and JSON files under `root`."""

    #: A local folder, `file://…` or `s3://bucket/prefix`.
    root: str

    @cached_property
    def _fs(self) -> tuple[Any, str]:
        return stored.open_root(self.root)

    def uri(self, asset_key: dg.AssetKey, partition: str | None = None) -> str:
        """Where an asset's (partition's) value is, as a URL or local path."""
        fs, _ = self._fs
        path = self._path(asset_key, partition)
        return path if stored.is_local(fs) else fs.unstrip_protocol(path)

    def _path(self, asset_key: dg.AssetKey, partition: str | None = None) -> str:
        _, base = self._fs
        parts = [base, *asset_key.path]
        if partition is not None:
            parts.append(partition)
        return "/".join(parts)

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        fs, _ = self._fs
        keys = set(context.asset_partition_keys) if context.has_asset_partitions else set()
        values: dict[str | None, Any]
        if keys and isinstance(obj, dict) and set(obj) == keys:
            values = dict(obj)  # one value per partition key (a backfill run returns many)
        elif len(keys) > 1:
            raise dg.Failure(
                f"{context.asset_key.to_user_string()}: a run of {len(keys)} partitions must "
                "return a dict of one value per partition key"
            )
        elif keys:
            values = {context.asset_partition_key: obj}
        else:
            values = {None: obj}
        written = 0
        for partition, value in values.items():
            written += stored.write_value(fs, self._path(context.asset_key, partition), value)
        shown = self.uri(context.asset_key, None if len(values) > 1 else next(iter(values)))
        context.add_output_metadata(
            {"storage": dg.MetadataValue.path(shown), "stored_bytes": written}
        )

    def load_input(self, context: dg.InputContext) -> Any:
        fs, _ = self._fs
        key = context.asset_key
        if not context.has_asset_partitions:
            return self._read(fs, self._path(key))
        partitions = context.asset_partition_keys
        if _wants_newest(context):
            # An unpartitioned reader of a partitioned asset (drift against the newest week's
            # splits): the newest partition written, not all of them.
            asked = set(partitions)
            newest = [p for p in self.partitions_written(key) if p in asked]
            if not newest:
                raise dg.Failure(
                    description=f"no partition of {key.to_user_string()} is stored under "
                    f"{self.uri(key)} yet: materialize one first"
                )
            return self._read(fs, self._path(key, newest[-1]))
        if len(partitions) == 1 and not _wants_many(context):
            return self._read(fs, self._path(key, partitions[0]))
        # Many partitions: those written, by key (a window may reach past the first day there
        # is). One listing, not a request per key: the keys may be every day since the start.
        written = set(self.partitions_written(key))
        return {p: self._read(fs, self._path(key, p)) for p in partitions if p in written}

    def partitions_written(self, asset_key: dg.AssetKey) -> list[str]:
        """The partition keys of `asset_key` that hold a finished value, sorted."""
        fs, _ = self._fs
        base = self._path(asset_key)
        fs.invalidate_cache(base)  # an object store's listing may be cached from before a write
        if not fs.exists(base):
            return []
        names = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(base, detail=False))
        return [n for n in names if not n.startswith(".") and stored.exists(fs, f"{base}/{n}")]

    def _read(self, fs: Any, path: str) -> Any:
        try:
            return stored.read_value(fs, path, _stored_types())
        except stored.StoredValueError as exc:
            raise dg.Failure(description=str(exc)) from exc


def _wants_many(context: dg.InputContext) -> bool:
    metadata = context.definition_metadata or {}
    return bool(metadata.get("partitions_as_dict"))


def _wants_newest(context: dg.InputContext) -> bool:
    metadata = context.definition_metadata or {}
    return bool(metadata.get("newest_partition"))
