"""KFP component: ingest the data source into a Dataset artifact."""

from kfp import dsl
from kfp.dsl import Dataset, Output

from components.common.image import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def ingest(source_uri: str, na_values: list, dataset: Output[Dataset]):
    """Reads the data source into one Parquet file.

    Args:
        source_uri: a local Parquet lake (Hive-partitioned folder), a Parquet file or a CSV file.
        na_values: extra strings that mean "missing" in CSV files.
        dataset: the table as Parquet; metadata holds rows, columns, source URI and content hash.
    """
    from components.common.io import write_frame
    from components.common.step import step_summary, user_errors
    from components.ingest.logic import content_hash, read_source, resolve_source

    with user_errors("ingest"):
        source = resolve_source(source_uri)
        frame = read_source(source, na_values=na_values)
    write_frame(dataset.path, frame)
    dataset.metadata.update(
        {
            "rows": len(frame),
            "columns": list(frame.columns),
            "source_uri": source_uri,
            "content_hash": content_hash(frame),
        }
    )
    step_summary("ingest", f"{len(frame)} rows, {frame.shape[1]} columns from {source_uri}")
