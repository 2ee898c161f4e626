"""Tang et al.'s Epinions / Ciao (MSU, WSDM 2012): ``rating.mat`` + ``trustnetwork.mat`` (MATLAB v5).

Rating columns (1-based ids): user, item, category, rating, helpfulness[, timestamp]; some copies have only
4 columns (user, item, category, rating). Trust: truster, trustee[, time], directed. The array's key varies
(``rating``, ``rating_with_timestamp``, ``trustnetwork``, ``trust``): the first key not starting with ``__``
that holds a 2-D numeric array, or ``--mat-key`` / ``--trust-mat-key``. dtypes vary (int32, uint16) and are
cast to int64. Rows with rating 0 are dropped (counted as ``rating_zero``). Category is given per rating row;
an item's category is its modal one (ties: the smallest id).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import scipy.io

from recmtl.config import PrepareConfig
from recmtl.data import steps
from recmtl.data.schema import RawTables
from recmtl.data.sources._common import find_file
from recmtl.errors import DataFormatError

RATING_FILES = ["rating_with_timestamp.mat", "rating.mat"]
TRUST_FILES = ["trustnetwork.mat", "trust.mat"]


def load_mat_array(path: Path, key: str | None, min_columns: int) -> np.ndarray:
    """The 2-D numeric array stored under ``key`` (or the first such array) in a .mat file, as int64."""
    try:
        contents = scipy.io.loadmat(path)
    except Exception as exc:  # scipy raises ValueError/TypeError/OSError variants for non-.mat input
        raise DataFormatError(
            f"{path}: not a readable MATLAB .mat file ({type(exc).__name__}: {exc})"
        ) from None
    arrays = {k: v for k, v in contents.items() if not k.startswith("__")}
    if key is not None:
        if key not in arrays:
            raise DataFormatError(f"{path}: no key {key!r} (keys: {', '.join(arrays) or 'none'})")
        chosen = arrays[key]
    else:
        candidates = [k for k, v in arrays.items() if isinstance(v, np.ndarray) and v.ndim == 2 and v.size]
        if not candidates:
            raise DataFormatError(f"{path}: no 2-D array found (keys: {', '.join(arrays) or 'none'})")
        key, chosen = candidates[0], arrays[candidates[0]]
    if not isinstance(chosen, np.ndarray) or chosen.ndim != 2 or not np.issubdtype(chosen.dtype, np.number):
        raise DataFormatError(f"{path}: key {key!r} is not a 2-D numeric array")
    if chosen.shape[1] < min_columns:
        raise DataFormatError(
            f"{path}: key {key!r} has {chosen.shape[1]} columns, expected at least {min_columns}"
        )
    return chosen.astype(np.int64)


def read(config: PrepareConfig) -> RawTables:
    """Read a Tang-format folder (or a rating .mat file with ``--raw``)."""
    rating_path = find_file(config.raw, RATING_FILES, "rating .mat file")
    ratings = load_mat_array(rating_path, config.mat_key, 4)
    frame = pl.DataFrame(
        {
            "user": ratings[:, 0],
            "item": ratings[:, 1],
            "category": ratings[:, 2],
            "rating": ratings[:, 3].astype(np.float32),
        }
    )
    if ratings.shape[1] >= 6:
        frame = frame.with_columns(ts=pl.Series(ratings[:, 5]))
    valid = frame.filter(pl.col("rating") > 0)
    item_category = steps.modal_value(valid, "item", "category").sort("item")
    social = None
    folder = Path(config.raw) if config.raw is not None and Path(config.raw).is_dir() else rating_path.parent
    trust_path = find_file(folder, TRUST_FILES, "trust .mat file", required=False)
    if trust_path is not None:
        trust = load_mat_array(trust_path, config.trust_mat_key, 2)
        social = pl.DataFrame({"src": trust[:, 0], "dst": trust[:, 1]})
    return RawTables(
        interactions=valid.drop("category"),
        social=social,
        item_category=item_category,
        explicit=True,
        dropped={"rating_zero": frame.height - valid.height},
    )
