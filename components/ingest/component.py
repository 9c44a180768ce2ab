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
):
    """Reads the data source into one Parquet file.

    Args:
        source_uri: a Parquet lake (Hive-partitioned folder), a Parquet file or a CSV file, as a
            local path or a URI (file://, s3://, gs://); credentials come from the environment.
        na_values: extra strings that mean "missing" in CSV files.
        columns: read only these columns (empty: all).
        filters: keep rows matching these [column, operator, value] triples (empty: all).
        since_watermark: JSON of an earlier run's watermark: read only files new or changed
            since (empty: read everything).
        dataset: the table as Parquet; metadata holds rows, columns, source URI, content hash
            and the watermark of this read.
    """
    import json

    from components.common.io import write_frame
    from components.common.step import step_summary, user_errors
    from components.ingest.logic import content_hash, read_source, resolve_source

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
            "source_uri": source_uri,
            "content_hash": content_hash(frame),
            "incremental": bool(since_watermark),
            "watermark": watermark,
        }
    )
    step_summary("ingest", f"{len(frame)} rows, {frame.shape[1]} columns from {source_uri}")
