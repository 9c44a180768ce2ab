"""Prepare: the preprocessing transform and the train/test split.

The transform is fitted on the training split only and ends up as the first step of the
model's scikit-learn Pipeline, so the model server applies exactly what training applied.
What it does is declared in the run config's `prepare:` section (components.common.settings.prepare);
with no options it is median imputation and standard scaling for numbers, and one-hot encoding
for categories with missing values as a category of their own.

The served transform, in order:

1. derived features (ratios, date parts, bins), when declared: computed from the raw features
   the server receives, then treated as numeric or categorical features like any other;
2. per numeric column: outlier clipping (bounds from the training rows), log(1 + x), imputation,
   scaling; per categorical column: imputation, one-hot or ordinal encoding (rare categories
   grouped, unseen ones never an error);
3. missing-value indicators, when asked for: numeric ones from the imputer (then scaled with
   their column's group), categorical ones 0/1 in a branch of their own.

Dropping outlier rows is not part of it: it removes training rows only (`drop_outlier_rows`).
"""

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import MissingIndicator, SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    MinMaxScaler,
    OneHotEncoder,
    OrdinalEncoder,
    RobustScaler,
    StandardScaler,
)

from components.common.columnwise import take_rows
from components.common.errors import PipelineInputError
from components.common.schema import (
    CATEGORICAL,
    MISSING_CATEGORY,
    NUMERIC,
    as_model_input,
    coded_with_token,
    model_input,
)
from components.common.settings.prepare import (
    CATEGORICAL_IMPUTE,
    NUMERIC_IMPUTE,
    OutlierRule,
    PrepareOptions,
    parse_prepare_options,
    parse_split_options,
)
from components.common.stable_split import hashed_is_test, key_columns_of, row_hashes
from components.common.transformers import (
    DerivedFeatures,
    NumericImputer,
    OutlierClipper,
    log1p_nonnegative,
    outlier_bounds,
    parse_dates,
)
from components.prepare.fitting import fit_without_output

SCALERS = {"standard": StandardScaler, "minmax": MinMaxScaler, "robust": RobustScaler}
NUMERIC_KEYS = ("impute", "fill_value", "scale", "missing_indicator", "outliers")
CATEGORICAL_KEYS = ("impute", "fill_value", "encode", "rare_min_frequency", "missing_indicator")


def _options(options: PrepareOptions | dict | None) -> PrepareOptions:
    if isinstance(options, PrepareOptions):
        return options
    return parse_prepare_options(options)


def model_columns(schema: dict, options: PrepareOptions | dict | None = None) -> dict[str, str]:
    """Every column the encoders see, name -> kind: the features, then the derived features.

    Excluded features are left out, and so is the date column of a date_part: its raw text as a
    category would be one category per timestamp; its parts are the features.
    """
    options = _options(options)
    dates = {f.date_part[0] for f in options.derived if f.date_part}
    left_out = set(options.exclude) | dates
    columns = {f["name"]: f["kind"] for f in schema["features"] if f["name"] not in left_out}
    columns.update({f.name: f.output_kind for f in options.derived})
    return columns


def check_options(options: PrepareOptions | dict | None, schema: dict) -> PrepareOptions:
    """Check that every column the options name exists and has the kind the option needs.

    Returns:
        The options as a PrepareOptions.

    Raises:
        PipelineInputError: one line naming the key and the column, for example
            "prepare.log_transform: column 'region' is not numeric".
    """
    options = _options(options)
    kinds = {f["name"]: f["kind"] for f in schema["features"]}

    def feature(key: str, name: str, kind: str | None = None, what: str | None = None) -> None:
        if name not in kinds:
            raise PipelineInputError(f"{key}: column '{name}' is not a feature")
        if kind and kinds[name] != kind:
            raise PipelineInputError(f"{key}: column '{name}' is {kinds[name]}, not {what}")

    for index, derived in enumerate(options.derived):
        key = f"prepare.derived[{index}]"
        if derived.name in kinds:
            raise PipelineInputError(f"{key}.name: '{derived.name}' is already a feature")
        if derived.ratio:
            for name in derived.ratio:
                feature(f"{key}.ratio", name, NUMERIC, "numeric")
        elif derived.bins:
            feature(f"{key}.bins.column", derived.bins.column, NUMERIC, "numeric")
        else:
            # Dates reach the model as text (as_model_input), so they are categorical features.
            feature(f"{key}.date_part", derived.date_part[0], CATEGORICAL, "a date (text)")
    for name in options.exclude:
        feature("prepare.exclude", name)

    columns = model_columns(schema, options)

    def usable(key: str, name: str, kind: str | None = None) -> None:
        if name not in columns:
            if name in kinds:
                raise PipelineInputError(f"{key}: column '{name}' is excluded from the model")
            raise PipelineInputError(f"{key}: column '{name}' is not a feature")
        if kind and columns[name] != kind:
            raise PipelineInputError(f"{key}: column '{name}' is not {kind}")

    for name in options.log_transform:
        usable("prepare.log_transform", name, NUMERIC)
    if options.outliers.columns and options.outliers.method == "none":
        raise PipelineInputError("prepare.outliers.columns: set prepare.outliers.method too")
    for name in options.outliers.columns:
        usable("prepare.outliers.columns", name, NUMERIC)
    for name, override in options.columns.items():
        usable("prepare.columns", name)
        kind = columns[name]
        allowed = NUMERIC_KEYS if kind == NUMERIC else CATEGORICAL_KEYS
        given = override.given()
        for key in given:
            if key not in allowed:
                raise PipelineInputError(
                    f"prepare.columns.{name}.{key}: column '{name}' is {kind} "
                    f"(its keys: {', '.join(allowed)})"
                )
        impute, fill = given.get("impute"), given.get("fill_value")
        imputes = NUMERIC_IMPUTE if kind == NUMERIC else CATEGORICAL_IMPUTE
        if impute is not None and impute not in imputes:
            raise PipelineInputError(
                f"prepare.columns.{name}.impute: '{impute}' does not fit {kind} column '{name}' "
                f"(expected {', '.join(imputes)})"
            )
        if fill is not None and isinstance(fill, str) != (kind == CATEGORICAL):
            expected = "a string" if kind == CATEGORICAL else "a number"
            raise PipelineInputError(
                f"prepare.columns.{name}.fill_value: expected {expected} for {kind} column "
                f"'{name}' (got {fill!r})"
            )
    return options


def _outlier_rule(name: str, options: PrepareOptions) -> OutlierRule | None:
    """The outlier rule of one numeric column: its own, else the section's, else none."""
    override = options.columns.get(name)
    if override is not None and override.outliers is not None:
        rule = override.outliers
    else:
        rule = options.outliers
        if rule.columns and name not in rule.columns:
            return None
    return None if rule.method == "none" else rule


def _numeric_settings(name: str, options: PrepareOptions) -> tuple:
    settings = options.numeric.model_dump()
    override = options.columns.get(name)
    if override is not None:
        settings.update({k: v for k, v in override.given().items() if k in settings})
    rule = _outlier_rule(name, options)
    clip = None
    if rule is not None and rule.action == "clip":
        clip = (rule.method, rule.iqr_k, tuple(rule.quantiles))
    return (
        settings["impute"],
        float(settings["fill_value"]),
        bool(settings["missing_indicator"]),
        settings["scale"],
        clip,
        name in options.log_transform,
    )


def _categorical_settings(name: str, options: PrepareOptions) -> tuple:
    settings = options.categorical.model_dump()
    override = options.columns.get(name)
    if override is not None:
        settings.update({k: v for k, v in override.given().items() if k in settings})
    return (
        settings["impute"],
        str(settings["fill_value"]),
        settings["encode"],
        settings["rare_min_frequency"],
    )


def _categorical_indicator(name: str, options: PrepareOptions) -> bool:
    override = options.columns.get(name)
    if override is not None and override.missing_indicator is not None:
        return override.missing_indicator
    return options.categorical.missing_indicator


def _numeric_branch(settings: tuple) -> Pipeline:
    impute, fill_value, indicator, scale, clip, log = settings
    steps = []
    if clip is not None:
        method, iqr_k, quantiles = clip
        steps.append(("clip", OutlierClipper(method=method, iqr_k=iqr_k, quantiles=quantiles)))
    if log:
        steps.append(
            ("log", FunctionTransformer(log1p_nonnegative, feature_names_out="one-to-one"))
        )
    constant = fill_value if impute == "constant" else None
    # The indicator columns come out of the imputer, so the scaler scales them with the rest
    # (harmless to the model; the export's imputer converter writes them). "missing-only": a column without missing training values gets none,
    # and a missing value at serving is no error.
    imputer = NumericImputer(strategy=impute, fill_value=constant, add_indicator=indicator)
    steps.append(("impute", imputer))
    if scale != "none":
        steps.append(("scale", SCALERS[scale]()))
    return Pipeline(steps)


def _categorical_branch(settings: tuple):
    impute, fill_value, encode, rare = settings
    # 0 turns grouping off; an int is a count of training rows, a float a share of them.
    min_frequency = rare or None
    if encode == "onehot":
        # Unseen categories: all zeros, or the infrequent column when rare ones were grouped.
        encoder = OneHotEncoder(
            handle_unknown="infrequent_if_exist" if min_frequency else "ignore",
            min_frequency=min_frequency,
            sparse_output=False,
        )
    else:
        encoder = OrdinalEncoder(
            handle_unknown="use_encoded_value", unknown_value=-1, min_frequency=min_frequency
        )
    if impute == "constant" and fill_value == MISSING_CATEGORY:
        # Missing values already arrive as MISSING_CATEGORY (see as_model_input).
        return encoder
    # The imputer's missing value is the token, a string, as skl2onnx requires.
    imputer = SimpleImputer(
        missing_values=MISSING_CATEGORY,
        strategy=impute,
        fill_value=fill_value if impute == "constant" else None,
    )
    return Pipeline([("impute", imputer), ("encode", encoder)])


def _grouped(
    names: list[str], settings_of, options: PrepareOptions
) -> list[tuple[tuple, list[str]]]:
    """Columns with the same settings share one branch, in order of first appearance; no
    column still gets one (empty) branch, with the section's settings."""
    groups: dict[tuple, list[str]] = {}
    for name in names:
        groups.setdefault(settings_of(name, options), []).append(name)
    return list(groups.items()) or [(settings_of("", options), [])]


def build_preprocessor(schema: dict, options: PrepareOptions | dict | None = None):
    """The unfitted transform of the features (the output of `as_model_input`).

    Args:
        schema: the schema that validate wrote.
        options: the `prepare:` section (PrepareOptions or its dict); None or {}: the defaults,
            median imputation and standard scaling for numeric features, one-hot encoding with
            missing values as their own category and unknown categories ignored.

    Returns:
        A ColumnTransformer; with derived features, a Pipeline of DerivedFeatures ("derive") and
        that ColumnTransformer ("columns").

    Raises:
        PipelineInputError: an option names a column that does not fit it (see check_options).
    """
    options = check_options(options, schema)
    columns = model_columns(schema, options)
    numeric = [name for name, kind in columns.items() if kind == NUMERIC]
    categorical = [name for name, kind in columns.items() if kind == CATEGORICAL]

    branches = []
    for kind, names, settings_of, make_branch in (
        ("numeric", numeric, _numeric_settings, _numeric_branch),
        ("categorical", categorical, _categorical_settings, _categorical_branch),
    ):
        for index, (settings, group) in enumerate(_grouped(names, settings_of, options)):
            name = kind if index == 0 else f"{kind}_{index + 1}"
            branches.append((name, make_branch(settings), group))

    # Categorical indicators are a 0/1 branch of their own: inside the imputer they would reach
    # the encoder as one more category column (the export converts this MissingIndicator on
    # the missing token). As above: none for a column without missing training values.
    flagged = [n for n in categorical if _categorical_indicator(n, options)]
    if flagged:
        indicator = MissingIndicator(missing_values=MISSING_CATEGORY, error_on_new=False)
        branches.append(("categorical_missing", indicator, flagged))

    transform = ColumnTransformer(branches, remainder="drop", verbose_feature_names_out=False)
    if not options.derived:
        return transform
    return Pipeline([("derive", _derive_step(options)), ("columns", transform)])


def _derive_step(options: PrepareOptions) -> DerivedFeatures:
    # Plain dicts, not the options' classes: the pickled model depends on as little as possible.
    derived = [{**f.model_dump(exclude_none=True), "kind": f.output_kind} for f in options.derived]
    return DerivedFeatures(derived)


def _with_derived(features: pd.DataFrame, options: PrepareOptions) -> pd.DataFrame:
    """The features plus every derived feature, as the served transform computes them."""
    if not options.derived:
        return features
    return _derive_step(options).fit(features).transform(features)


def drop_outlier_rows(
    train: pd.DataFrame, schema: dict, options: PrepareOptions | dict | None = None
) -> tuple[pd.DataFrame, int]:
    """Remove training rows outside the bounds of a column whose outlier action is drop.

    Bounds come from the training rows themselves (each column on its own); a missing value is
    never an outlier. Test rows and serving requests are never dropped.

    Returns:
        The remaining rows and how many were dropped.

    Raises:
        PipelineInputError: no row (or, for classification, one class only) would remain.
    """
    options = check_options(options, schema)
    columns = model_columns(schema, options)
    rules = {}
    for name, kind in columns.items():
        rule = _outlier_rule(name, options) if kind == NUMERIC else None
        if rule is not None and rule.action == "drop":
            rules[name] = rule
    if not rules:
        return train, 0
    features = _with_derived(as_model_input(train, schema), options)
    keep = np.ones(len(train), dtype=bool)
    for name, rule in rules.items():
        values = pd.to_numeric(features[name], errors="coerce").to_numpy(dtype=float)
        lower, upper = outlier_bounds(values, rule.method, rule.iqr_k, rule.quantiles)
        keep &= np.isnan(values) | ((values >= lower[0]) & (values <= upper[0]))
    remaining = train[keep].reset_index(drop=True)
    named = ", ".join(f"'{n}'" for n in rules)
    if remaining.empty:
        raise PipelineInputError(
            f"prepare.outliers: action drop would remove every training row (columns {named})"
        )
    if schema["task"] == "classification" and remaining[schema["target"]].nunique() < 2:
        raise PipelineInputError(
            f"prepare.outliers: action drop would leave one class of '{schema['target']}' in "
            f"the training rows (columns {named})"
        )
    return remaining, int((~keep).sum())


def fit_preprocessor(
    train: pd.DataFrame, schema: dict, options: PrepareOptions | dict | None = None
):
    """Build the transform (see build_preprocessor) and fit it on the training rows only.

    Raises:
        PipelineInputError: an option does not fit the schema, or a log_transform column has
            negative training values.
    """
    options = check_options(options, schema)
    if options.derived:  # derived features are computed from the text itself
        features = as_model_input(train, schema)
    else:
        # Categorical features as categoricals: the fit makes strings of them only where it
        # needs every row (see fit_without_output).
        features = model_input(train, schema, coded_with_token)
    if options.log_transform:
        derived = _with_derived(features, options)
        for name in options.log_transform:
            values = pd.to_numeric(derived[name], errors="coerce")
            if (values < 0).any():
                raise PipelineInputError(
                    f"prepare.log_transform: column '{name}' has negative training values "
                    f"(min {values.min():g}); log(1 + x) needs x >= 0"
                )
    return fit_without_output(build_preprocessor(schema, options), features)


def _group_split(groups: pd.Series, column: str, test_size: float, seed: int):
    """Training and test positions (in `groups`) with no group on both sides: a group is on the
    test side when its value's hash is (components.common.stable_split), so it stays there as
    other groups arrive."""
    if groups.isna().any():
        raise PipelineInputError(
            f"split.group_column: column '{column}' has {int(groups.isna().sum())} labelled "
            "rows without a group"
        )
    count = groups.nunique()
    if count < 2:
        raise PipelineInputError(
            f"split.group_column: column '{column}' has {count} group; a group split needs "
            "at least 2"
        )
    is_test = hashed_is_test(row_hashes(groups.to_frame(), [groups.name], seed), test_size)
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def _time_split(values: pd.Series, column: str, test_size: float):
    """Training and test positions (in `values`): the newest times are the test rows."""
    if values.isna().any():
        raise PipelineInputError(
            f"split.time_column: column '{column}' has {int(values.isna().sum())} labelled "
            "rows without a time"
        )
    if not (pd.api.types.is_numeric_dtype(values) or pd.api.types.is_datetime64_any_dtype(values)):
        parsed = parse_dates(values.astype(str))
        if parsed.isna().any():
            example = values[parsed.isna()].iloc[0]
            raise PipelineInputError(
                f"split.time_column: column '{column}' holds values that are neither numbers "
                f"nor dates (for example {example!r})"
            )
        values = parsed
    times, counts = np.unique(values.to_numpy(), return_counts=True)
    if len(times) < 2:
        raise PipelineInputError(
            f"split.time_column: column '{column}' has one value; a time split needs two or more"
        )
    # The k newest times make the test side; every row of one time is on the same side, and k
    # is the one whose share of rows comes closest to test_size (at least one time each side).
    newest_rows = np.cumsum(counts[::-1])[:-1]
    k = int(np.argmin(np.abs(newest_rows / len(values) - test_size))) + 1
    is_test = (values >= times[-k]).to_numpy()
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def split_table(
    frame: pd.DataFrame,
    schema: dict,
    test_size: float,
    seed: int,
    strategy: str = "stratified",
    group_column: str = "",
    time_column: str = "",
    key_columns: list[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Drop unlabelled rows, then split them into training and test rows.

    Strategies random, stratified and group decide each row's side from the row alone
    (components.common.stable_split): a hash of its key salted with `seed`, below test_size for
    a test row. The same row is on the same side in every run, whatever else the table holds, so
    a model re-scored later can be scored on rows it never trained on. The test share is
    test_size in expectation, not exactly. Stratified is the same rule: a rule that gives each
    class exactly its share would make a row's side depend on the other rows, so each class is
    near test_size only in expectation (on a large table, within a fraction of a percent).

    The split is computed on row positions and each side is taken from `frame` once: on 10
    million rows, copying the table for each intermediate step is what costs time and memory
    (benchmarks/ingest_scale.py). Each side keeps the table's order.

    Args:
        frame: the validated table.
        schema: the schema that validate wrote.
        test_size: the held-out share of rows (of groups, for strategy group).
        seed: the hash's salt (stratified, random and group).
        strategy: stratified (by the label for classification; random for regression), random,
            group (no value of group_column on both sides) or time (the newest rows by
            time_column are the test rows; rows with the same time stay together).
        group_column: the column of strategy group.
        time_column: the column of strategy time: numbers or dates.
        key_columns: the columns that identify a row (random and stratified); empty: every
            column but the target.

    Raises:
        PipelineInputError: one line naming the split key or the column.
    """
    split = parse_split_options(
        {
            "test_size": test_size,
            "seed": seed,
            "strategy": strategy,
            "group_column": group_column,
            "time_column": time_column,
            "key_columns": list(key_columns or []),
        }
    )
    target = schema["target"]
    for key in ("group_column", "time_column"):
        column = getattr(split, key)
        if column and column not in frame.columns:
            raise PipelineInputError(f"split.{key}: column '{column}' is not in the data")
        if column == target:
            raise PipelineInputError(f"split.{key}: column '{column}' is the target")
    for column in split.key_columns:
        if column not in frame.columns:
            raise PipelineInputError(f"split.key_columns: column '{column}' is not in the data")
        if column == target:
            raise PipelineInputError(f"split.key_columns: column '{column}' is the target")
    labelled = np.flatnonzero(frame[target].notna().to_numpy())
    # The labelled rows' labels, read by position below (no copy when every row has one).
    every_row = len(labelled) == len(frame)
    labels = frame[target] if every_row else frame[target].iloc[labelled]
    classification = schema["task"] == "classification"
    if split.strategy == "group":
        column = frame[split.group_column].iloc[labelled].reset_index(drop=True)
        train, test = _group_split(column, split.group_column, split.test_size, split.seed)
    elif split.strategy == "time":
        column = frame[split.time_column].iloc[labelled].reset_index(drop=True)
        train, test = _time_split(column, split.time_column, split.test_size)
    else:
        if classification and split.strategy == "stratified":
            smallest = labels.value_counts().min()
            if smallest < 2:
                raise PipelineInputError(
                    f"column '{target}' (the target): a class has {smallest} row; "
                    "a stratified split needs at least 2 per class"
                )
        columns = key_columns_of(frame.columns, target, split.key_columns)
        rows = frame if every_row else take_rows(frame[columns], labelled)
        is_test = hashed_is_test(row_hashes(rows, columns, split.seed), split.test_size)
        train, test = np.flatnonzero(~is_test), np.flatnonzero(is_test)
    if not len(train) or not len(test):
        side = "training" if not len(train) else "test"
        raise PipelineInputError(
            f"split.test_size={split.test_size}: the {side} side of the {len(labelled)} "
            f"labelled rows is empty"
        )
    if classification and labels.iloc[train].nunique() < 2:
        raise PipelineInputError(
            f"split.strategy {split.strategy}: the training rows hold one class of '{target}' "
            f"({labels.iloc[train[0]]!r}); a classifier needs two or more"
        )
    if len(labelled) < len(frame):  # positions among the labelled rows, to the frame's
        train, test = labelled[train], labelled[test]
    return take_rows(frame, train), take_rows(frame, test)


def describe_split(
    train: pd.DataFrame,
    test: pd.DataFrame,
    strategy: str = "stratified",
    group_column: str = "",
    time_column: str = "",
) -> str:
    """One line on how the rows were split, for the step summary."""
    if strategy == "group":
        return (
            f"group split by '{group_column}': {train[group_column].nunique()} groups in "
            f"training, {test[group_column].nunique()} in test, none in both"
        )
    if strategy == "time":
        return (
            f"time split by '{time_column}': training up to {train[time_column].max()}, "
            f"test from {test[time_column].min()}"
        )
    return f"{strategy} split"
