"""A Parquet lake's files and their fingerprints: what a data watermark records.

The ingest step records, for every file it read, a fingerprint (size and ETag or modification
time); a later read takes only the files whose fingerprint is new or changed. The monitor reads
the same watermark (the champion's `data.watermark`) to find the partitions added since the
champion was trained, so both list and fingerprint files by this one rule.
"""

from pathlib import Path

import fsspec


def parquet_files(fs: fsspec.AbstractFileSystem, path: str) -> dict[str, dict]:
    """Every Parquet file under `path` with its fsspec info; hidden and temporary files (a name
    starting with "." or "_") are not the lake's."""
    found = fs.find(path, detail=True)
    return {
        name: info
        for name, info in found.items()
        if name.endswith(".parquet") and not Path(name).name.startswith((".", "_"))
    }


def fingerprint(info: dict) -> str:
    """What changes when a file is rewritten: its size and its ETag or modification time."""
    stamp = info.get("ETag") or info.get("etag") or info.get("mtime") or info.get("LastModified")
    return f"{info.get('size')}:{stamp}"


def fingerprints(fs: fsspec.AbstractFileSystem, path: str) -> dict[str, str]:
    """Every Parquet file of the lake at `path`, relative to it, with its fingerprint."""
    base = path.rstrip("/") + "/"
    return {
        name.removeprefix(base): fingerprint(info)
        for name, info in sorted(parquet_files(fs, path).items())
    }
