"""The prepared-dataset directory: atomic writes, table hashes, manifest, and loading it back."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from recmtl.data.schema import SCHEMA_VERSION
from recmtl.errors import RecmtlError

MANIFEST = "manifest.json"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_directory(out: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``out`` to write into; rename it to ``out`` only on success.

    A failure or interrupt (any exception, KeyboardInterrupt included) removes the temporary directory and
    leaves an existing ``out`` untouched. An existing ``out`` is an error unless ``overwrite``; then it is
    replaced only after the new one is complete.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise RecmtlError(f"{out}: output directory exists (pass --overwrite to replace it)")
    if out.exists() and not out.is_dir():
        raise RecmtlError(f"{out}: exists and is not a directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to a temporary sibling of ``path``, then rename it into place."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    tmp.write_text(text)
    tmp.replace(path)


def write_table(frame: pl.DataFrame, path: Path, schema: pa.Schema) -> str:
    """Write ``frame`` as parquet with exactly ``schema`` (columns selected and cast); return its sha256."""
    table = frame.select([f.name for f in schema]).to_arrow()
    table = table.cast(schema) if table.schema != schema else table
    pq.write_table(table, path, compression="zstd")
    return sha256_file(path)


@dataclass(frozen=True)
class PreparedDataset:
    """A prepared directory loaded back: the manifest and lazy access to its tables."""

    root: Path
    manifest: dict[str, Any]

    @property
    def n_users(self) -> int:
        return int(self.manifest["counts"]["users"])

    @property
    def n_items(self) -> int:
        return int(self.manifest["counts"]["items"])

    def has(self, table: str) -> bool:
        return table in self.manifest["tables"]

    def table(self, name: str) -> pl.DataFrame:
        """Read one table; a missing one is a one-line error naming it."""
        if not self.has(name):
            raise RecmtlError(f"{self.root}: dataset has no {name} table")
        return pl.read_parquet(self.root / f"{name}.parquet")

    @property
    def data_hash(self) -> str:
        """One sha256 over the tables' hashes: identifies the data a run was trained on."""
        tables = self.manifest["tables"]
        joined = "\n".join(f"{name}:{tables[name]}" for name in sorted(tables))
        return hashlib.sha256(joined.encode()).hexdigest()


def read_manifest(root: Path) -> dict[str, Any]:
    """The manifest of a prepared directory, or a one-line error saying why ``root`` is not one."""
    root = Path(root)
    if not root.is_dir():
        raise RecmtlError(f"{root}: not a directory (expected the output of recmtl prepare)")
    path = root / MANIFEST
    if not path.is_file():
        raise RecmtlError(f"{root}: no {MANIFEST} (not a recmtl prepare output)")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RecmtlError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or "tables" not in manifest or "counts" not in manifest:
        raise RecmtlError(f"{path}: missing 'tables' or 'counts' (not a recmtl manifest)")
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise RecmtlError(
            f"{path}: schema version {manifest.get('schema_version')!r}, this recmtl reads {SCHEMA_VERSION}"
        )
    return manifest


def open_dataset(root: Path, *, verify: bool = True) -> PreparedDataset:
    """Open a prepared directory; with ``verify``, every table's sha256 must match the manifest."""
    root = Path(root)
    manifest = read_manifest(root)
    if verify:
        for name, expected in manifest["tables"].items():
            path = root / f"{name}.parquet"
            if not path.is_file():
                raise RecmtlError(f"{path}: table listed in the manifest is missing")
            if sha256_file(path) != expected:
                raise RecmtlError(f"{path}: sha256 does not match the manifest (file changed after prepare)")
    return PreparedDataset(root, manifest)
