"""KFP component: split the data and fit the preprocessing transform on the training split."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components.common.image import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def prepare(
    dataset: Input[Dataset],
    schema: Input[Artifact],
    test_size: float,
    seed: int,
    train: Output[Dataset],
    test: Output[Dataset],
    preprocessor: Output[Model],
) -> NamedTuple("PrepareOutputs", [("train_rows", int), ("test_rows", int)]):
    """Splits the table (stratified for classification) and fits the ColumnTransformer.

    Args:
        dataset: the validated table.
        schema: the schema that validate wrote.
        test_size: the share of rows held out for evaluation.
        seed: the random seed of the split.
        train: the training rows.
        test: the held-out rows.
        preprocessor: the fitted ColumnTransformer (joblib), fitted on `train` only.

    Returns:
        The number of rows in each split.
    """
    from typing import NamedTuple

    import joblib

    from components.common.io import read_frame, read_json, write_frame
    from components.common.step import step_summary, user_errors
    from components.prepare.logic import fit_preprocessor, split_table

    table_schema = read_json(schema.path)
    with user_errors("prepare"):
        train_frame, test_frame = split_table(
            read_frame(dataset.path), table_schema, test_size, seed
        )
        transform = fit_preprocessor(train_frame, table_schema)
    write_frame(train.path, train_frame)
    write_frame(test.path, test_frame)
    joblib.dump(transform, preprocessor.path)
    train.metadata["rows"] = len(train_frame)
    test.metadata["rows"] = len(test_frame)
    step_summary("prepare", f"{len(train_frame)} training rows, {len(test_frame)} test rows")
    outputs = NamedTuple("PrepareOutputs", [("train_rows", int), ("test_rows", int)])
    return outputs(len(train_frame), len(test_frame))
