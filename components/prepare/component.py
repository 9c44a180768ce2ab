"""KFP component: split the data and fit the preprocessing transform on the training split."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components.common.image import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def prepare(
    dataset: Input[Dataset],
    schema: Input[Artifact],
    prepare_config: dict,
    split_config: dict,
    train: Output[Dataset],
    test: Output[Dataset],
    preprocessor: Output[Model],
) -> NamedTuple("PrepareOutputs", [("train_rows", int), ("test_rows", int)]):
    """Splits the table and fits the preprocessing transform on the training rows only.

    Args:
        dataset: the validated table.
        schema: the schema that validate wrote.
        prepare_config: the run config's `prepare:` section (components.common.settings.
            prepare.PrepareOptions): imputation, outliers, encoding, scaling, log transform,
            derived features; empty: median imputation and standard scaling, one-hot encoding.
        split_config: the run config's `split:` section (SplitOptions): `test_size` (the share
            of rows, of groups for strategy group, held out), `seed`, `strategy` (stratified by
            the label for classification, random, group: no `group_column` value on both
            sides, or time: the newest rows by `time_column` are the test rows), `key_columns`
            (random and stratified: the columns that identify a row; empty: every column but
            the target). A row's side is a hash of its key (of its group) salted with the seed:
            the same in every run, whatever rows arrive or leave.
        train: the training rows (less the outlier rows that options drop); its metadata's
            `split` is the split record (components.common.stable_split.split_record), which
            register keeps so that the gate can later tell which rows the model trained on.
        test: the held-out rows, with the same `split` record.
        preprocessor: the fitted transform (joblib), fitted on `train` only: a ColumnTransformer,
            or with derived features a Pipeline of DerivedFeatures and a ColumnTransformer.

    Returns:
        The number of rows in each split.
    """
    from typing import NamedTuple

    import joblib

    from components.common.io import read_frame, read_json, write_frame
    from components.common.settings.prepare import parse_split_options
    from components.common.stable_split import split_record
    from components.common.step import step_summary, user_errors
    from components.prepare.logic import (
        check_options,
        describe_split,
        drop_outlier_rows,
        fit_preprocessor,
        split_table,
    )

    table_schema = read_json(schema.path)
    with user_errors("prepare"):
        # Options are checked against the schema before any work.
        prepare_options = check_options(prepare_config, table_schema)
        split = parse_split_options(split_config)
        train_frame, test_frame = split_table(
            read_frame(dataset.path),
            table_schema,
            split.test_size,
            split.seed,
            split.strategy,
            split.group_column,
            split.time_column,
            split.key_columns,
        )
        # Before outlier rows are dropped: the cutoff is the newest time the split put in training.
        record = split_record(
            split.strategy,
            split.seed,
            split.test_size,
            split.key_columns,
            split.group_column,
            split.time_column,
            train_frame,
            table_schema["target"],
        )
        train_frame, dropped = drop_outlier_rows(train_frame, table_schema, prepare_options)
        transform = fit_preprocessor(train_frame, table_schema, prepare_options)
    write_frame(train.path, train_frame)
    write_frame(test.path, test_frame)
    joblib.dump(transform, preprocessor.path)
    train.metadata["rows"] = len(train_frame)
    train.metadata["outlier_rows_dropped"] = dropped
    train.metadata["split_strategy"] = split.strategy
    train.metadata["split"] = record
    test.metadata["rows"] = len(test_frame)
    test.metadata["split"] = record
    summary = f"{len(train_frame)} training rows, {len(test_frame)} test rows"
    if split.strategy != "stratified":
        described = describe_split(
            train_frame, test_frame, split.strategy, split.group_column, split.time_column
        )
        summary += f" ({described})"
    if dropped:
        summary += f"; {dropped} training rows dropped as outliers"
    step_summary("prepare", summary)
    outputs = NamedTuple("PrepareOutputs", [("train_rows", int), ("test_rows", int)])
    return outputs(len(train_frame), len(test_frame))
