"""KFP component: ingest the data source into a Dataset artifact."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output

from components.common.image import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def ingest(
    data_config: dict,
    plan: Input[Artifact],
    dataset: Output[Dataset],
):
    """Reads the data source into one Parquet file: a live data lake, or an ETL snapshot.

    With an ETL spec (`data.etl`), the source is extracted (a CSV or Parquet file or folder, or
    a SQL database), the declared transforms are applied, and the result is loaded into an
    immutable, content-addressed snapshot under `data.snapshot_root` (the same input and spec
    give the same snapshot, which is then reused); the snapshot's table is this step's dataset.

    Args:
        data_config: the run config's `data:` section (components.common.settings.sections.
            DataConfig): `source`, a Parquet lake (Hive-partitioned folder), a Parquet or CSV
            file, as a local path or a URI (file://, s3://, gs://; credentials come from the
            environment), read with `na_values`, `columns` and `filters` ([column, operator,
            value]); or `etl`, an ETL spec, and `snapshot_root`, where snapshots are kept.
        plan: the run's plan (components.common.retraining): a full run reads everything, or
            what its `since_watermark` (`data.since_watermark`) left; an incremental run reads
            the lake's files new since the champion's watermark (or its window of partitions)
            and the prediction log's labelled rows since the champion was registered.
        dataset: the table as Parquet; metadata holds rows, columns, schema (Arrow types),
            bytes, source URI, content hash and the watermark of this read (for a snapshot: its
            id and origin instead of the watermark).
    """
    import os

    from components.common.io import read_json, write_frame
    from components.common.lake_source import resolve_source
    from components.common.secrets import redact_url
    from components.common.settings.parse import parse_section
    from components.common.settings.sections import DataConfig
    from components.common.step import step_summary, user_errors
    from components.ingest.logic import content_hash, parquet_schema, read_planned
    from components.ingest.snapshot import export_snapshot, run_etl, snapshot_metadata

    with user_errors("ingest"):
        data = parse_section(DataConfig, data_config, "data")
    if data.etl is not None:
        spec = data.etl.model_dump(mode="json", exclude_none=True)
        with user_errors("ingest"):
            result = run_etl(spec, data.snapshot_root)
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
        run_plan = read_json(plan.path)
        source = resolve_source(data.source)
        frame, watermark, read = read_planned(
            source, run_plan, data.na_values, data.columns, [list(f) for f in data.filters]
        )
    write_frame(dataset.path, frame)
    dataset.metadata.update(
        {
            "rows": len(frame),
            "columns": list(frame.columns),
            "schema": parquet_schema(dataset.path),
            "bytes": os.path.getsize(dataset.path),
            "source_uri": redact_url(data.source),
            "content_hash": content_hash(frame),
            "incremental": bool(run_plan["since_watermark"]),
            "watermark": watermark,
            **read,
        }
    )
    step_summary(
        "ingest",
        f"{len(frame)} rows, {frame.shape[1]} columns from {redact_url(data.source)}"
        + (
            f" ({read['files_read']} files, {read['log_rows']} labelled predictions)"
            if run_plan["mode"] == "incremental"
            else ""
        ),
    )
