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
    replaced only after the new one is complete, and only if it is empty or a recmtl prepare output (holds
    a recmtl ``manifest.json``): ``--overwrite`` never deletes a directory recmtl did not write.
    """
    out = Path(out)
    check_output(out, overwrite=overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(out)
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if out.exists():
            out.rename(old)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old.exists() and not out.exists():
            old.rename(out)  # the new directory never arrived: put the previous one back
        shutil.rmtree(old, ignore_errors=True)


def check_output(out: Path, *, overwrite: bool = False) -> None:
    """A one-line error unless ``out`` may be written: it does not exist, or ``overwrite`` and it is an
    empty directory or a recmtl prepare output (holds a recmtl ``manifest.json``)."""
    out = Path(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise RecmtlError(f"{out}: is a file, not a directory (--out names the directory to write)")
    if not _replaceable(out):
        raise RecmtlError(
            f"{out}: output directory exists and is not a recmtl prepare output (not empty, no recmtl "
            f"{MANIFEST}), so --overwrite will not replace it; remove it yourself or choose another --out"
        )
    if not overwrite:
        raise RecmtlError(f"{out}: output directory exists (pass --overwrite to replace it)")


def _replaceable(directory: Path) -> bool:
    """Whether ``--overwrite`` may replace ``directory``: it is empty or holds a recmtl manifest.json."""
    if not any(directory.iterdir()):
        return True
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(manifest, dict) and "tables" in manifest and "counts" in manifest


def temporary_sibling(path: Path, pid: int | None = None) -> Path:
    """The temporary file :func:`atomic_file` writes before renaming it to ``path``, in process ``pid``
    (default: this one)."""
    path = Path(path)
    return path.parent / f".{path.name}.tmp-{os.getpid() if pid is None else pid}"


def remove_temporaries(directory: Path, pid: int) -> list[Path]:
    """Remove the temporary files that process ``pid`` left in ``directory`` (one killed before its
    :func:`atomic_file` could clean up); return them."""
    left = sorted(Path(directory).glob(temporary_sibling(Path("*"), pid).name))
    for path in left:
        path.unlink(missing_ok=True)
    return left


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; rename it into place when the block ends, or remove
    it on any exception (KeyboardInterrupt included): ``path`` is either its old or its new content."""
    path = Path(path)
    tmp = temporary_sibling(path)
    try:
        yield tmp
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (:func:`atomic_file`)."""
    with atomic_file(path) as tmp:
        tmp.write_text(text)


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
