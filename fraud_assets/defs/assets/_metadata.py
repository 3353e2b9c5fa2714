"""Helpers that turn results into Dagster metadata the UI shows well."""

import base64
from collections.abc import Mapping
from pathlib import Path

import dagster as dg


def image(path: Path, title: str) -> dg.MarkdownMetadataValue:
    """A PNG embedded in markdown, so the plot shows in the asset's page."""
    data = base64.b64encode(path.read_bytes()).decode()
    return dg.MetadataValue.md(f"**{title}**\n\n![{title}](data:image/png;base64,{data})")


def table(
    rows: Mapping[str, Mapping[str, float | int | str]], first: str
) -> dg.MarkdownMetadataValue:
    """A markdown table: one row per key of `rows`, one column per metric."""
    columns = list(next(iter(rows.values())).keys()) if rows else []
    lines = [f"| {first} | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, values in rows.items():
        cells = [f"{v:.4f}" if isinstance(v, float) else str(v) for v in values.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return dg.MetadataValue.md("\n".join(lines))
