"""Loading transactions from the data directory, splitting them in time, fingerprinting them."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fraud_core import synthetic
from fraud_core.schema import FEATURE_COLUMNS, LABEL, TIME, conform

SUFFIXES = (".csv", ".parquet")


class DataError(ValueError):
    """A data file that cannot be used, with the file and the reason in the message."""


@dataclass(frozen=True)
class LoadedData:
    frame: pd.DataFrame
    source: str  # "real" or "synthetic"
    files: list[str]


def data_files(data_dir: Path) -> list[Path]:
    """The `*.csv` and `*.parquet` files of the data directory, in name order."""
    if not data_dir.is_dir():
        return []
    return sorted(p for p in data_dir.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)


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


def load_transactions(
    data_dir: Path,
    *,
    synthetic_rows: int = synthetic.N_ROWS,
    seed: int = 42,
    fraud_rate: float = synthetic.FRAUD_RATE,
) -> LoadedData:
    """Every data file of `data_dir` concatenated, or a synthetic set when there is none.

    Content is not validated here, so that the asset checks can report every problem at once;
    `attrs["sources"]` keeps which file each row came from, for error messages.
    """
    files = data_files(data_dir)
    if not files:
        frame = synthetic.generate(n_rows=synthetic_rows, fraud_rate=fraud_rate, seed=seed)
        frame.attrs["sources"] = [("synthetic", 0, len(frame))]
        frame.attrs["data_source"] = "synthetic"
        return LoadedData(frame, "synthetic", [])
    frames, sources, start = [], [], 0
    for path in files:
        part = read_file(path)
        frames.append(part)
        sources.append((str(path), start, len(part)))
        start += len(part)
    frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    frame.attrs["sources"] = sources
    frame.attrs["data_source"] = "real"
    return LoadedData(frame, "real", [str(p) for p in files])


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
    """Time-ordered train / validation / test frames: every test row is later than training."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    fingerprint: str
    source: str = "unknown"  # "real" or "synthetic"

    def items(self) -> list[tuple[str, pd.DataFrame]]:
        return [("train", self.train), ("validation", self.validation), ("test", self.test)]

    def summary(self) -> dict[str, dict[str, float]]:
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


def as_arrays(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The 30 raw fields as a float matrix, and the labels."""
    return frame[list(FEATURE_COLUMNS)].to_numpy(np.float64), frame[LABEL].to_numpy(np.int8)
