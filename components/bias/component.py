"""KFP component: bias analysis of the data before training."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Output

from components.common.image import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def bias(
    dataset: Input[Dataset],
    schema: Input[Artifact],
    sensitive_columns: list,
    positive_class: str,
    report: Output[Markdown],
):
    """Group sizes and base rates of the favourable label per sensitive column.

    Args:
        dataset: the validated table (all labelled rows).
        schema: the schema that validate wrote.
        sensitive_columns: columns to group by; numeric ones are compared in quantile bands.
        positive_class: the favourable class; empty means the second of two sorted classes.
        report: Markdown tables, one per sensitive column (rendered in the Kubeflow dashboard).
    """
    from components.bias.logic import data_bias, markdown_tables
    from components.common.io import read_frame, read_json
    from components.common.step import step_summary, user_errors

    table_schema = read_json(schema.path)
    frame = read_frame(dataset.path)
    with user_errors("bias"):
        tables = data_bias(frame, table_schema, sensitive_columns, positive_class)
    with open(report.path, "w", encoding="utf-8") as handle:
        handle.write(markdown_tables("Data: groups and base rates", tables))
    for column, table in tables.items():
        step_summary(
            "bias",
            f"{column}: {len(table)} groups, base rate {table['base_rate'].min():.3f}"
            f"-{table['base_rate'].max():.3f}",
        )
