"""The GraphQL documents the Dagster client sends, and the plain values it reads back.

Written against dagster-webserver 1.13's schema; `tests/airflow_bridge` runs every one of them
against a real webserver.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

ERROR_FIELDS = "message className cause { message className cause { message className } }"

LAUNCH = """
mutation LaunchRun($executionParams: ExecutionParams!) {
  launchRun(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidStepError { invalidStepKey }
    ... on InvalidOutputError { stepKey invalidOutputName }
    ... on Error { message }
  }
}"""

RUNS = """
query FindRuns($filter: RunsFilter) {
  runsOrError(filter: $filter) {
    __typename
    ... on Runs { results { runId status jobName creationTime assetSelection { path } } }
    ... on Error { message }
  }
}"""

STATUS = """
query RunStatus($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { runId status }
    ... on Error { message }
  }
}"""

TERMINATE = """
mutation TerminateRun($runId: String!) {
  terminateRun(runId: $runId) {
    __typename
    ... on TerminateRunSuccess { run { runId } }
    ... on TerminateRunFailure { message }
    ... on Error { message }
  }
}"""

#: A job's assets and its partition keys (in order; none for an unpartitioned job).
JOB_SHAPE = """
query JobShape($selector: PipelineSelector!) {
  assetNodes(pipeline: $selector) { assetKey { path } }
  pipelineOrError(params: $selector) {
    __typename
    ... on Pipeline { partitionKeysOrError { partitionKeys } }
    ... on Error { message }
  }
}"""

QUEUE_DAEMON = """
query QueueDaemon {
  instance { daemonHealth { daemonStatus(daemonType: "QUEUED_RUN_COORDINATOR") {
    healthy lastHeartbeatTime
  } } }
}"""

EVENTS = (
    """
query RunEvents($runId: ID!, $after: String, $limit: Int) {
  logsForRun(runId: $runId, afterCursor: $after, limit: $limit) {
    __typename
    ... on EventConnection {
      cursor
      hasMore
      events {
        __typename
        ... on MaterializationEvent { assetKey { path } metadataEntries { ...Entry } }
        ... on AssetCheckEvaluationEvent {
          evaluation { checkName assetKey { path } success severity description }
        }
        ... on ExecutionStepFailureEvent { stepKey message error { ERROR } }
        ... on RunFailureEvent { message error { ERROR } }
        ... on ResourceInitFailureEvent { message error { ERROR } }
        ... on RunCanceledEvent { message }
      }
    }
    ... on Error { message }
  }
}

fragment Entry on MetadataEntry {
  __typename
  label
  ... on FloatMetadataEntry { floatValue floatRepr }
  ... on IntMetadataEntry { intValue intRepr }
  ... on TextMetadataEntry { text }
  ... on BoolMetadataEntry { boolValue }
  ... on JsonMetadataEntry { jsonString }
  ... on UrlMetadataEntry { url }
  ... on MarkdownMetadataEntry { mdStr }
  ... on PathMetadataEntry { path }
  ... on NotebookMetadataEntry { path }
  ... on TimestampMetadataEntry { timestamp }
  ... on PipelineRunMetadataEntry { runId }
  ... on AssetMetadataEntry { assetKey { path } }
  ... on JobMetadataEntry { jobName }
  ... on PythonArtifactMetadataEntry { module name }
  ... on PoolMetadataEntry { pool }
  ... on TableMetadataEntry { table { records } }
}"""
).replace("ERROR", ERROR_FIELDS)


def asset_key(key: Mapping[str, Any]) -> str:
    """An `AssetKey { path }` as Dagster writes it on the command line: "a/b"."""
    return "/".join(key["path"])


def asset_keys(keys: list[Mapping[str, Any]] | None) -> list[str] | None:
    return None if keys is None else [asset_key(k) for k in keys]


def error_text(error: Mapping[str, Any] | None) -> str:
    """A `PythonError` and its causes, one message after another."""
    parts = []
    while error:
        parts.append(str(error["message"]).strip())
        error = error.get("cause")
    return "\ncaused by: ".join(parts)


def metadata_value(entry: Mapping[str, Any]) -> Any:
    """A `MetadataEntry` as a plain Python value (JSON parsed, a URL or markdown as its text)."""
    kind = entry["__typename"]
    if kind == "FloatMetadataEntry":
        value = entry["floatValue"]
        return float(entry["floatRepr"]) if value is None else float(value)  # nan, inf
    if kind == "IntMetadataEntry":
        value = entry["intValue"]
        return int(entry["intRepr"]) if value is None else int(value)  # beyond 32 bits
    if kind == "JsonMetadataEntry":
        return json.loads(entry["jsonString"])
    if kind == "AssetMetadataEntry":
        return asset_key(entry["assetKey"])
    if kind == "PythonArtifactMetadataEntry":
        return f"{entry['module']}.{entry['name']}"
    if kind == "TableMetadataEntry":
        return [json.loads(record) for record in entry["table"]["records"]]
    for name in (
        "text",
        "boolValue",
        "url",
        "mdStr",
        "path",
        "timestamp",
        "runId",
        "jobName",
        "pool",
    ):
        if name in entry:
            return entry[name]
    return None  # NullMetadataEntry, and kinds with no plain value (code references, lineage)
