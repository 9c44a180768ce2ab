"""KFP component: ingest the data source into a Dataset artifact."""

from kfp import dsl
from kfp.dsl import Dataset, Output

from components.common.image import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def ingest(
    source_uri: str,
    na_values: list,
    columns: list,
    filters: list,
    since_watermark: str,
    dataset: Output[Dataset],
    etl_spec: str = "",
    snapshot_root: str = "",
):
    """Reads the data source into one Parquet file: a live data lake, or an ETL snapshot.

    With `etl_spec`, the source is extracted (a CSV or Parquet file or folder, or a SQL
    database), the declared transforms are applied, and the result is loaded into an immutable,
    content-addressed snapshot under `snapshot_root` (the same input and spec give the same
    snapshot, which is then reused); the snapshot's table is this step's dataset.

    Args:
        source_uri: a Parquet lake (Hive-partitioned folder), a Parquet file or a CSV file, as a
            local path or a URI (file://, s3://, gs://); credentials come from the environment.
        na_values: extra strings that mean "missing" in CSV files.
        columns: read only these columns (empty: all).
        filters: keep rows matching these [column, operator, value] triples (empty: all).
        since_watermark: JSON of an earlier run's watermark: read only files new or changed
            since (empty: read everything).
        dataset: the table as Parquet; metadata holds rows, columns, schema (Arrow types),
            bytes, source URI, content hash and the watermark of this read (for a snapshot: its
            id and origin instead of the watermark).
        etl_spec: JSON of an ETL spec (components.ingest.snapshot.EtlSpec); empty: read
            `source_uri` as it is, live.
        snapshot_root: where snapshots are kept (a local folder).
    """
    import json
    import os

    from components.common.io import write_frame
    from components.common.step import step_summary, user_errors
    from components.ingest.logic import (
        content_hash,
        parquet_schema,
        read_source,
        resolve_source,
    )
    from components.ingest.snapshot import export_snapshot, run_etl, snapshot_metadata

    if etl_spec:
        spec = json.loads(etl_spec)
        with user_errors("ingest"):
            result = run_etl(spec, snapshot_root)
        export_snapshot(result, dataset.path)
        dataset.metadata.update(snapshot_metadata(result, spec))
        step_summary(
            "ingest",
            f"ETL snapshot {result.snapshot_id} ({'created' if result.created else 'reused'}): "
            f"{result.rows} rows, {len(result.schema)} columns from "
            f"{dataset.metadata['origin']}",
        )
        return

    with user_errors("ingest"):
        source = resolve_source(source_uri)
        frame, watermark = read_source(
            source,
            na_values=na_values,
            columns=columns,
            filters=filters,
            since=json.loads(since_watermark) if since_watermark else None,
        )
    write_frame(dataset.path, frame)
    dataset.metadata.update(
        {
            "rows": len(frame),
            "columns": list(frame.columns),
            "schema": parquet_schema(dataset.path),
            "bytes": os.path.getsize(dataset.path),
            "source_uri": source_uri,
            "content_hash": content_hash(frame),
            "incremental": bool(since_watermark),
            "watermark": watermark,
        }
    )
    step_summary("ingest", f"{len(frame)} rows, {frame.shape[1]} columns from {source_uri}")
