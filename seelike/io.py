"""Atomic file output, hashing and tidy tables with metadata.

Every output is written to a temporary sibling and renamed into place, so an interrupted job never leaves a
half-written file that a later run would trust.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd

_META_KEY = b"seelike"


@contextlib.contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it onto `path` (file or directory)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.unlink(tmp)  # the caller creates a file or a directory there
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.is_dir():
            shutil.rmtree(tmp_path, ignore_errors=True)
        elif tmp_path.exists():
            tmp_path.unlink()


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json(path: str | Path, obj: Any) -> None:
    """Write `obj` as indented JSON, atomically."""
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_table(df: pd.DataFrame, path: str | Path, meta: dict[str, Any] | None = None) -> None:
    """Write a tidy table with the settings that made it.

    Parquet keeps `meta` in the file's schema metadata; CSV gets a sidecar `<path>.meta.json`.
    """
    path = Path(path)
    meta = meta or {}
    if path.suffix == ".csv":
        with atomic_write(path) as tmp:
            df.to_csv(tmp, index=False)
        write_json(str(path) + ".meta.json", meta)
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    schema_meta = dict(table.schema.metadata or {})
    schema_meta[_META_KEY] = json.dumps(meta, sort_keys=True, default=_jsonable).encode()
    table = table.replace_schema_metadata(schema_meta)
    with atomic_write(path) as tmp:
        pq.write_table(table, tmp)


def read_table(path: str | Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read a table written by `write_table`; returns (frame, metadata)."""
    path = Path(path)
    if path.suffix == ".csv":
        meta_path = Path(str(path) + ".meta.json")
        meta = read_json(meta_path) if meta_path.exists() else {}
        return pd.read_csv(path), meta
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    raw = (table.schema.metadata or {}).get(_META_KEY)
    return table.to_pandas(), (json.loads(raw) if raw else {})


def load_script(path: str | Path, name: str, reuse: bool = True) -> ModuleType:
    """A repository script (scripts/, benchmarks/: no package) imported by path as module `name`, registered in
    sys.modules (dataclasses and pickling look their module up there); `reuse`: the one already loaded."""
    import importlib.util
    import sys

    if reuse and name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
