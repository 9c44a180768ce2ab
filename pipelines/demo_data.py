"""The demo data: Toronto arrests (scikit-lego), written as a year-partitioned Parquet lake.

The pipeline then ingests from the lake, as it would from a real one, not from the package.
"""

import shutil
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds

from components.common.errors import PipelineInputError


def write_arrests_lake(destination: str | Path) -> tuple[Path, int]:
    """Write the arrests data as <destination>/year=YYYY/part-0.parquet, unless already there.

    The lake is written beside its final place and renamed in, so an interrupted write leaves
    nothing behind.

    Returns:
        The lake's folder and the number of rows in it.
    """
    from sklego.datasets import load_arrests

    destination = Path(
        destination.removeprefix("file://") if isinstance(destination, str) else destination
    )
    if destination.exists() and any(destination.rglob("*.parquet")):
        rows = ds.dataset(destination, format="parquet", partitioning="hive").count_rows()
        return destination, rows
    if destination.exists() and any(destination.iterdir()):
        raise PipelineInputError(
            f"demo data folder '{destination}' exists and is not a Parquet lake"
        )
    frame = load_arrests(as_frame=True)
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}-", dir=destination.parent))
    try:
        ds.write_dataset(
            pa.Table.from_pandas(frame, preserve_index=False),
            staging,
            format="parquet",
            partitioning=ds.partitioning(pa.schema([("year", pa.int64())]), flavor="hive"),
            basename_template="part-{i}.parquet",
        )
        if destination.exists():
            destination.rmdir()
        staging.rename(destination)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return destination, len(frame)
