"""The transaction schema: columns, dtypes and valid ranges, in one place.

The loader, the asset checks, the API request model and the synthetic generator all read the
schema from here. It is the public Kaggle/ULB credit-card data set's (`creditcard.csv`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

TIME = "Time"
AMOUNT = "Amount"
LABEL = "Class"
PCA_COLUMNS: tuple[str, ...] = tuple(f"V{i}" for i in range(1, 29))
#: The 30 fields a transaction carries when it is scored, in model order.
FEATURE_COLUMNS: tuple[str, ...] = (TIME, *PCA_COLUMNS, AMOUNT)
#: The 31 columns of a labelled data file.
COLUMNS: tuple[str, ...] = (*FEATURE_COLUMNS, LABEL)
LABEL_VALUES: frozenset[int] = frozenset({0, 1})


@dataclass(frozen=True)
class ColumnSpec:
    """What one column must hold."""

    name: str
    dtype: str
    minimum: float | None = None
    maximum: float | None = None
    description: str = ""


SCHEMA: dict[str, ColumnSpec] = {
    TIME: ColumnSpec(TIME, "float64", 0.0, None, "Seconds since the first transaction in the set"),
    **{
        name: ColumnSpec(name, "float64", None, None, f"Principal component {name[1:]}")
        for name in PCA_COLUMNS
    },
    AMOUNT: ColumnSpec(AMOUNT, "float64", 0.0, None, "Transaction amount"),
    LABEL: ColumnSpec(LABEL, "int8", 0, 1, "1 for fraud, 0 for a legitimate transaction"),
}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a data frame, specific enough to act on."""

    kind: str  # "missing_column", "not_numeric", "nulls", "label", "range", "empty"
    column: str | None
    count: int
    message: str
    examples: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return self.message


def _sources(df: pd.DataFrame) -> list[tuple[str, int, int]]:
    return list(df.attrs.get("sources", []))


def locate(df: pd.DataFrame, positions: np.ndarray, limit: int = 3) -> list[str]:
    """Describe row positions as `file:line`, so a user can open the file and see the row."""
    sources = _sources(df)
    out: list[str] = []
    for pos in positions[:limit]:
        where = f"row {int(pos)}"
        for path, start, n_rows in sources:
            if start <= pos < start + n_rows:
                # +2: one for the header line, one because editors count lines from 1.
                where = f"{path}:{int(pos - start) + 2}"
                break
        out.append(where)
    return out


def describe_sources(df: pd.DataFrame) -> str:
    sources = _sources(df)
    return ", ".join(path for path, _, _ in sources) if sources else "the input frame"


def structure_problems(df: pd.DataFrame, columns: tuple[str, ...] = COLUMNS) -> list[Problem]:
    """Columns that are missing or not numeric, and an empty frame."""
    where = describe_sources(df)
    problems: list[Problem] = []
    if len(df) == 0:
        problems.append(Problem("empty", None, 0, f"{where}: no rows"))
    missing = [c for c in columns if c not in df.columns]
    if missing:
        problems.append(
            Problem(
                "missing_column",
                missing[0],
                len(missing),
                f"{where}: missing column(s) {', '.join(missing)}",
            )
        )
    for name in columns:
        if name not in df.columns or pd.api.types.is_numeric_dtype(df[name]):
            continue
        coerced = pd.to_numeric(df[name], errors="coerce")
        bad = np.flatnonzero(coerced.isna().to_numpy() & df[name].notna().to_numpy())
        values = [repr(df[name].iloc[i]) for i in bad[:3]]
        rows = locate(df, bad)
        problems.append(
            Problem(
                "not_numeric",
                name,
                len(bad),
                f"{where}: column {name} has {len(bad)} non-numeric value(s), "
                f"e.g. {', '.join(values)} at {', '.join(rows)}",
                rows,
            )
        )
    return problems


def _numeric(df: pd.DataFrame, name: str) -> pd.Series:
    col = df[name]
    return col if pd.api.types.is_numeric_dtype(col) else pd.to_numeric(col, errors="coerce")


def null_problems(df: pd.DataFrame, columns: tuple[str, ...] = COLUMNS) -> list[Problem]:
    """Missing values (NaN, empty cells) in any schema column."""
    where = describe_sources(df)
    problems = []
    for name in columns:
        if name not in df.columns:
            continue
        # Text that is not a number is the schema check's business, not a null.
        numeric = _numeric(df, name).to_numpy(dtype=float, na_value=np.nan)
        mask = df[name].isna().to_numpy() | np.isinf(numeric)
        if mask.any():
            bad = np.flatnonzero(mask)
            rows = locate(df, bad)
            problems.append(
                Problem(
                    "nulls",
                    name,
                    len(bad),
                    f"{where}: column {name} has {len(bad)} missing or infinite value(s), "
                    f"e.g. at {', '.join(rows)}",
                    rows,
                )
            )
    return problems


def label_problems(df: pd.DataFrame) -> list[Problem]:
    """`Class` values other than 0 and 1."""
    if LABEL not in df.columns:
        return []
    where = describe_sources(df)
    labels = _numeric(df, LABEL)
    mask = ~labels.isin(list(LABEL_VALUES)).to_numpy() & df[LABEL].notna().to_numpy()
    if not mask.any():
        return []
    bad = np.flatnonzero(mask)
    rows = locate(df, bad)
    values = sorted({repr(df[LABEL].iloc[i]) for i in bad[:50]})[:5]
    return [
        Problem(
            "label",
            LABEL,
            len(bad),
            f"{where}: column {LABEL} has {len(bad)} value(s) other than 0/1, "
            f"e.g. {', '.join(values)} at {', '.join(rows)}",
            rows,
        )
    ]


def range_problems(df: pd.DataFrame, columns: tuple[str, ...] = COLUMNS) -> list[Problem]:
    """Values outside a column's valid range, such as a negative `Amount`."""
    where = describe_sources(df)
    problems = []
    for name, spec in SCHEMA.items():
        if name == LABEL or name not in df.columns or name not in columns:
            continue
        values = _numeric(df, name).to_numpy(dtype=float, na_value=np.nan)
        with np.errstate(invalid="ignore"):
            mask = np.zeros(len(values), dtype=bool)
            if spec.minimum is not None:
                mask |= values < spec.minimum
            if spec.maximum is not None:
                mask |= values > spec.maximum
        if mask.any():
            bad = np.flatnonzero(mask)
            rows = locate(df, bad)
            bound = " and ".join(
                f"{op} {limit:g}"
                for op, limit in ((">=", spec.minimum), ("<=", spec.maximum))
                if limit is not None
            )
            problems.append(
                Problem(
                    "range",
                    name,
                    len(bad),
                    f"{where}: column {name} has {len(bad)} value(s) out of range "
                    f"(must be {bound}), e.g. {values[bad[0]]:g} at {', '.join(rows)}",
                    rows,
                )
            )
    return problems


def all_problems(df: pd.DataFrame) -> list[Problem]:
    return [*structure_problems(df), *null_problems(df), *label_problems(df), *range_problems(df)]


def conform(df: pd.DataFrame) -> pd.DataFrame:
    """Return the schema columns with their canonical dtypes; raise `ValueError` on any problem."""
    problems = all_problems(df)
    if problems:
        raise ValueError("; ".join(p.message for p in problems))
    out = pd.DataFrame(
        {name: df[name].to_numpy(dtype=np.float64) for name in FEATURE_COLUMNS}, index=df.index
    )
    out[LABEL] = df[LABEL].to_numpy().astype(np.int8)
    out.attrs = dict(df.attrs)
    return out


def scoring_matrix(df: pd.DataFrame) -> np.ndarray:
    """The 30 fields of rows to score as a float64 matrix, in model order.

    Integer and float columns are both fine (the real file writes `Time` as integers); extra
    columns are ignored. A missing column, text, a missing or infinite value or a value out of
    range raises `ValueError` naming the column and the rows.
    """
    problems = [
        *structure_problems(df, FEATURE_COLUMNS),
        *null_problems(df, FEATURE_COLUMNS),
        *range_problems(df, FEATURE_COLUMNS),
    ]
    if problems:
        raise ValueError("; ".join(p.message for p in problems))
    return df[list(FEATURE_COLUMNS)].to_numpy(dtype=np.float64)
