"""KFP component: validate the ingested table and write its schema."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output

from components.common.image import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def validate(
    dataset: Input[Dataset],
    target: str,
    task: str,
    sensitive_columns: list,
    column_types: dict,
    schema: Output[Artifact],
):
    """Checks required columns and types and fails the run naming the column when they are wrong.

    Args:
        dataset: the ingested table.
        target: the label column.
        task: "classification" or "regression".
        sensitive_columns: columns that must exist for bias analysis.
        column_types: declared column kinds ("numeric"/"categorical") that must hold.
        schema: JSON with target, task, classes and the features' names and kinds.
    """
    from components.common.io import read_frame, write_json
    from components.common.step import step_summary, user_errors
    from components.validate.logic import validate_table

    frame = read_frame(dataset.path)
    with user_errors("validate"):
        table_schema = validate_table(frame, target, task, sensitive_columns, column_types)
    write_json(schema.path, table_schema)
    schema.metadata.update({"features": len(table_schema["features"]), "target": target})
    step_summary(
        "validate", f"{len(table_schema['features'])} features, target '{target}' ({task})"
    )
