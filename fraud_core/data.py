"""Loading transactions of either contract, splitting them in time, fingerprinting them."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from fraud_core import synthetic
from fraud_core.cards import definition as card_def
from fraud_core.cards import schema as cards_schema
from fraud_core.cards import synthetic as cards_synthetic
from fraud_core.contracts import CARDS, CONTRACTS, KAGGLE
from fraud_core.schema import AMOUNT, FEATURE_COLUMNS, LABEL, TIME, conform

SUFFIXES = (".csv", ".parquet")
#: Files that are loaded by running code (pickle, joblib): never opened, always refused.
UNSAFE_SUFFIXES = (".pkl", ".pickle", ".joblib")


class DataError(ValueError):
    """A data file that cannot be used, with the file and the reason in the message."""


@dataclass(frozen=True)
class LoadedData:
    frame: pd.DataFrame
    source: str  # "real" or "synthetic"
    files: list[str]
    contract: str = KAGGLE  # or CARDS
    #: Columns of the files that nothing reads (card files only): never features.
    ignored: list[str] = field(default_factory=list)


def data_files(data_dir: Path) -> list[Path]:
    """The `*.csv` and `*.parquet` files of the data directory, in name order."""
    if not data_dir.is_dir():
        return []
    return sorted(p for p in data_dir.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)


def unsafe_files(data_dir: Path) -> list[Path]:
    """Pickle and joblib files of the data directory (also compressed: `x.pkl.gz`)."""
    if not data_dir.is_dir():
        return []
    return sorted(
        p
        for p in data_dir.iterdir()
        if p.is_file() and any(s.lower() in UNSAFE_SUFFIXES for s in p.suffixes)
    )


def read_file(path: Path) -> pd.DataFrame:
    """Read one file as it is; the real file's quoted header and `Class` values read as numbers."""
    try:
        if path.suffix.lower() == ".parquet":
            frame = pd.read_parquet(path)
        else:
            # pyarrow's reader is several times faster than pandas' own on a 150 MB file.
            frame = pd.read_csv(path, engine="pyarrow")
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path}: the file is empty") from exc
    except (OSError, ValueError) as exc:
        if path.stat().st_size == 0:
            raise DataError(f"{path}: the file is empty") from exc
        raise DataError(f"{path}: cannot be read ({exc})") from exc
    frame.columns = [str(c).strip().strip('"') for c in frame.columns]
    return frame


def _clean(name: str) -> str:
    return str(name).strip().strip('"')


def header(path: Path) -> list[str]:
    """A file's column names as written, read without its rows (a CSV's first block only)."""
    try:
        if path.suffix.lower() == ".parquet":
            schema = pq.ParquetFile(path).schema_arrow
            # pandas stores a named or non-range index as a column: it is no column of the data.
            index = (schema.pandas_metadata or {}).get("index_columns", [])
            return [n for n in schema.names if n not in index]
        with pacsv.open_csv(path) as reader:
            return list(reader.schema.names)
    except (OSError, ValueError, pa.ArrowException) as exc:
        if path.stat().st_size == 0:
            raise DataError(f"{path}: the file is empty") from exc
        raise DataError(f"{path}: cannot be read ({exc})") from exc


def _contracts(files: list[Path], forced: str) -> tuple[str, dict[Path, list[str]]]:
    """The one contract of `files` (by their headers, or `forced`), and each file's header."""
    headers = {path: header(path) for path in files}
    found = {path: cards_schema.contract_of(names) for path, names in headers.items()}
    for path, kind in found.items():
        if kind is None:
            shown = ", ".join(_clean(n) for n in headers[path][:12])
            more = f" and {len(headers[path]) - 12} more" if len(headers[path]) > 12 else ""
            raise DataError(
                f"{path}: its columns ({shown}{more}) are neither the Kaggle contract's "
                f"({TIME}, V1..V28, {AMOUNT}, {LABEL}) nor the card-transactions contract's "
                f"({', '.join(card_def.COLUMNS)}, or the Handbook's "
                f"{', '.join(cards_schema.HANDBOOK_COLUMNS)})"
            )
    kinds = sorted(set(found.values()), key=str)
    if len(kinds) > 1:
        listed = "; ".join(f"{path}: {kind}" for path, kind in found.items())
        raise DataError(f"the data files mix contracts, one contract per folder: {listed}")
    kind = str(kinds[0])
    if forced != "auto" and kind != forced:
        wrong = ", ".join(str(p) for p in files)
        raise DataError(f"the data contract is set to {forced!r} but {wrong} hold {kind} data")
    return kind, headers


def _read_cards_file(path: Path, names: list[str]) -> tuple[pd.DataFrame, dict[str, str]]:
    """Only the contract's columns of one file, renamed; ids and times as the file wrote them."""
    read = cards_schema.contract_columns([_clean(n) for n in names])
    raw = {_clean(n): n for n in names}
    wanted = [raw[name] for name in read]
    try:
        if path.suffix.lower() == ".parquet":
            table = pq.read_table(path, columns=wanted)
        else:
            # Ids and times as text: "007" stays "007", and every time goes through one parser.
            # Only an empty cell is missing: "NA" is a fine terminal id (pyarrow's default
            # would read it, "null" and "N/A" as missing).
            text = {raw[n]: pa.string() for n, c in read.items() if c in _TEXT_COLUMNS}
            options = pacsv.ConvertOptions(
                include_columns=wanted,
                column_types=text,
                null_values=[""],
                strings_can_be_null=True,
            )
            table = pacsv.read_csv(path, convert_options=options)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from exc
    frame = pd.DataFrame(
        {
            # Sharing equal strings saves memory and time where few values repeat (a customer's
            # id) and costs seconds where none do (transaction ids, times).
            read[_clean(name)]: table.column(name).to_pandas(
                deduplicate_objects=read[_clean(name)] in _FEW_VALUES
            )
            for name in table.column_names
        }
    )
    return frame, {c: n for n, c in read.items() if n != c}


_TEXT_COLUMNS = frozenset(
    {card_def.TRANSACTION_ID, card_def.TX_DATETIME, card_def.CUSTOMER_ID, card_def.TERMINAL_ID}
)
_FEW_VALUES = frozenset({card_def.CUSTOMER_ID, card_def.TERMINAL_ID})


def _synthetic_cards(customers: int, terminals: int, days: int, seed: int) -> pd.DataFrame:
    frame = cards_synthetic.generate(
        n_customers=customers, n_terminals=terminals, n_days=days, seed=seed
    )
    frame.attrs["sources"] = [("synthetic", 0, len(frame))]
    frame.attrs["data_source"] = "synthetic"
    frame.attrs["contract"] = CARDS
    return frame


def load_transactions(
    data_dir: Path,
    *,
    contract: str = "auto",
    synthetic_rows: int = synthetic.N_ROWS,
    seed: int = 42,
    fraud_rate: float = synthetic.FRAUD_RATE,
    cards_customers: int = 5000,
    cards_terminals: int = 10000,
    cards_days: int = 183,
    cards_seed: int | None = None,
) -> LoadedData:
    """Every data file of `data_dir` concatenated, or a synthetic set when there is none.

    The contract ("kaggle" or "cards") comes from the files' headers, or is forced by
    `contract`; with no file, "auto" gives the Kaggle synthetic set. Card files are read for
    the contract's columns only, Handbook names renamed; the others are listed in `ignored`.
    Content is not validated here, so that the asset checks can report every problem at once;
    `attrs["sources"]` keeps which file each row came from, for error messages.
    """
    if contract not in ("auto", *CONTRACTS):
        raise DataError(f"unknown data contract {contract!r}: auto, kaggle or cards")
    unsafe = unsafe_files(data_dir)
    if unsafe:
        raise DataError(
            f"{', '.join(map(str, unsafe))}: pickle and joblib files are never loaded (loading "
            "one runs the code inside it); convert the data to CSV or Parquet where you trust it"
        )
    files = data_files(data_dir)
    if not files:
        if contract == CARDS:
            chosen = seed if cards_seed is None else cards_seed
            frame = _synthetic_cards(cards_customers, cards_terminals, cards_days, chosen)
            return LoadedData(frame, "synthetic", [], CARDS)
        frame = synthetic.generate(n_rows=synthetic_rows, fraud_rate=fraud_rate, seed=seed)
        frame.attrs["sources"] = [("synthetic", 0, len(frame))]
        frame.attrs["data_source"] = "synthetic"
        frame.attrs["contract"] = KAGGLE
        return LoadedData(frame, "synthetic", [])
    kind, headers = _contracts(files, contract)
    frames, sources, start = [], [], 0
    ignored: list[str] = []
    renamed: dict[str, set[str]] = {}
    for path in files:
        if kind == KAGGLE:
            part = read_file(path)
        else:
            part, names = _read_cards_file(path, headers[path])
            for canonical, original in names.items():
                renamed.setdefault(canonical, set()).add(original)
            for name in cards_schema.ignored_columns(map(_clean, headers[path])):
                if name not in ignored:
                    ignored.append(name)
        frames.append(part)
        sources.append((str(path), start, len(part)))
        start += len(part)
    frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    frame.attrs["sources"] = sources
    frame.attrs["data_source"] = "real"
    frame.attrs["contract"] = kind
    if kind == CARDS:
        frame.attrs["column_names"] = {c: "/".join(sorted(n)) for c, n in renamed.items()}
        frame.attrs["ignored"] = list(ignored)
    return LoadedData(frame, "real", [str(p) for p in files], kind, ignored)


def row_hashes(frame: pd.DataFrame) -> np.ndarray:
    """One 64-bit hash of each row's content."""
    return pd.util.hash_pandas_object(frame, index=False).to_numpy()


def fingerprint(frame: pd.DataFrame, hashes: np.ndarray | None = None) -> str:
    """A sha256 of the rows' content in order, independent of the file format they came from."""
    hashed = row_hashes(frame) if hashes is None else hashes
    digest = hashlib.sha256(np.ascontiguousarray(hashed).tobytes())
    digest.update(",".join(map(str, frame.columns)).encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class Splits:
    """Time-ordered train / validation / test frames: every test row is later than training.

    Kaggle: the 31 columns of the schema. Cards (`fraud_core.cards.splits`): the canonical
    columns and the behavioural features of `feature_definition`, computed on the whole history
    before the cut; the rows of the label delay before validation and before test are left out
    (`gaps`), and `history` holds what a model published after this training has seen.
    """

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    fingerprint: str
    source: str = "unknown"  # "real" or "synthetic"
    contract: str = KAGGLE
    #: Cards: the definition of the feature columns of every split.
    feature_definition: card_def.FeatureDefinition | None = None
    #: Cards: the canonical labelled rows of the last retention period before the end of
    #: validation, which a bundle carries for the serving state to start from.
    history: pd.DataFrame | None = None
    #: Cards: the rows of the delay gaps (features computed), in no split.
    gaps: pd.DataFrame | None = None

    @property
    def label(self) -> str:
        """The label column of the split frames."""
        return LABEL if self.contract == KAGGLE else card_def.LABEL

    @property
    def input_fields(self) -> tuple[str, ...]:
        """The model input columns of the split frames (`FraudModel.input_fields`)."""
        if self.feature_definition is None:
            return FEATURE_COLUMNS
        return self.feature_definition.feature_names

    def arrays(self, part: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """A split frame's model input matrix and labels."""
        return as_arrays(part, self.feature_definition)

    def items(self) -> list[tuple[str, pd.DataFrame]]:
        return [("train", self.train), ("validation", self.validation), ("test", self.test)]

    def summary(self) -> dict[str, dict[str, Any]]:
        if self.contract == CARDS:
            return {name: _card_summary(part) for name, part in self.items()}
        return {
            name: {
                "rows": len(part),
                "frauds": int(part[LABEL].sum()),
                "fraud_rate": float(part[LABEL].mean()) if len(part) else 0.0,
                "time_from": float(part[TIME].min()) if len(part) else float("nan"),
                "time_to": float(part[TIME].max()) if len(part) else float("nan"),
            }
            for name, part in self.items()
        }


def _card_summary(part: pd.DataFrame) -> dict[str, Any]:
    """Rows, frauds and the first and last day (UTC) of a split of card transactions."""
    days = part[card_def.TX_US].to_numpy(np.int64) // card_def.US_PER_DAY

    def day(value: int) -> str:
        return str(np.datetime64(int(value), "D"))

    return {
        "rows": len(part),
        "frauds": int(part[card_def.LABEL].sum()),
        "fraud_rate": float(part[card_def.LABEL].mean()) if len(part) else 0.0,
        "date_from": day(days.min()) if len(part) else "-",
        "date_to": day(days.max()) if len(part) else "-",
        "days": int(days.max() - days.min() + 1) if len(part) else 0,
    }


def split_by_time(
    frame: pd.DataFrame, validation_fraction: float = 0.2, test_fraction: float = 0.2
) -> Splits:
    """Sort by `Time` and cut into train / validation / test; never shuffles the future back."""
    if not (0 < validation_fraction < 1 and 0 < test_fraction < 1):
        raise ValueError("validation_fraction and test_fraction must be in (0, 1)")
    if validation_fraction + test_fraction >= 1:
        raise ValueError("validation_fraction + test_fraction must leave rows to train on")
    clean = conform(frame)
    # Many rows share a `Time`: a hash of each row's content breaks the ties, so the same rows in
    # any file order give the same splits and the same fingerprint.
    content = row_hashes(clean)
    order = np.lexsort((content, clean[TIME].to_numpy()))
    ordered = clean.iloc[order].reset_index(drop=True)
    n = len(ordered)
    train_end = round(n * (1 - validation_fraction - test_fraction))
    val_end = round(n * (1 - test_fraction))
    return Splits(
        train=ordered.iloc[:train_end].reset_index(drop=True),
        validation=ordered.iloc[train_end:val_end].reset_index(drop=True),
        test=ordered.iloc[val_end:].reset_index(drop=True),
        fingerprint=fingerprint(ordered, content[order]),
        source=str(frame.attrs.get("data_source", "unknown")),
    )


def as_arrays(
    frame: pd.DataFrame, definition: card_def.FeatureDefinition | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The model input matrix and the labels: the 30 raw fields, or (cards) the features."""
    if definition is not None:
        columns, label = list(definition.feature_names), card_def.LABEL
    else:
        columns, label = list(FEATURE_COLUMNS), LABEL
    return frame[columns].to_numpy(np.float64), frame[label].to_numpy(np.int8)
