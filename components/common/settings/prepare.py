"""The run config's `prepare:` and `split:` sections: what prepare does to the data, declared.

Every option is data (no code strings), checked twice: its shape here, when the config loads
(unknown keys, wrong types, bad values), and its columns against the schema when prepare runs
(`components.prepare.logic.check_options`), each as one line naming the key.

    prepare:
      numeric: {impute: median, fill_value: 0, scale: standard, missing_indicator: false}
      categorical: {impute: constant, fill_value: __missing__, encode: onehot,
                    rare_min_frequency: 0, missing_indicator: false}
      outliers: {method: none, action: clip, iqr_k: 1.5, quantiles: [0.01, 0.99], columns: []}
      log_transform: [income]
      exclude: [customer_id]
      columns:
        age: {scale: robust}
        income: {outliers: {method: quantile, action: clip, quantiles: [0.0, 0.99]}}
      derived:
        - {name: debt_ratio, ratio: [debt, income]}
        - {name: signup_month, date_part: [signup_date, month], kind: categorical}
        - {name: age_band, bins: {column: age, edges: [0, 25, 45, 120]}}
    split:
      test_size: 0.2
      seed: 42
      strategy: stratified      # stratified | random | group | time
      group_column: ""
      time_column: ""
      key_columns: []           # random/stratified: the columns that identify a row

The defaults are exactly the transform prepare always fitted: median imputation and standard
scaling for numbers, missing categories as their own category and one-hot encoding that ignores
categories it did not see.

ONNX (components.export): every option converts (imputation, scaling, one-hot and ordinal
encoding with or without rare grouping, missing indicators, outlier clipping, log_transform,
per-column overrides, derived ratios and bins) except a derived date_part, which the export
refuses naming the derived feature (dates are parsed from text, which ONNX cannot do).
"""

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from components.common.settings.parse import parse_section
from components.common.vocabulary import MISSING_CATEGORY

NUMERIC_IMPUTE = ("median", "mean", "constant")
CATEGORICAL_IMPUTE = ("most_frequent", "constant")
SCALERS = ("standard", "minmax", "robust", "none")
ENCODERS = ("onehot", "ordinal")
DATE_PARTS = ("year", "quarter", "month", "day", "dayofweek", "dayofyear", "hour")
SPLIT_STRATEGIES = ("stratified", "random", "group", "time")


class _Options(BaseModel):
    # defer_build: a model is compiled when it first checks a value, not when it is imported,
    # so a command that reads a few keys (mlpipe models) does not pay for every section.
    model_config = ConfigDict(extra="forbid", defer_build=True)


def _check_rare(value: int | float | None) -> int | float | None:
    # An int is a count of rows, a float a share of them (scikit-learn's min_frequency); 0: off.
    if value is None:
        return value
    # A pipeline parameter's dict passes through a protobuf Struct, where every number is a
    # double: 5 arrives as 5.0. A share is below 1, so a whole number of 1 or more is a count.
    if isinstance(value, float) and value >= 1 and value.is_integer():
        return int(value)
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a count of rows must be >= 0")
    elif value != 0 and not 0 < value < 1:
        raise ValueError("a share of rows must be between 0 and 1 (exclusive)")
    return value


class NumericOptions(_Options):
    """How numeric features (and numeric derived features) are imputed and scaled."""

    impute: Literal[NUMERIC_IMPUTE] = Field("median", description="Fitted on training rows.")
    fill_value: float = Field(0.0, description="The value of impute: constant.")
    scale: Literal[SCALERS] = "standard"
    missing_indicator: bool = Field(
        False, description="Add a 0/1 column per feature that had missing training values."
    )


class CategoricalOptions(_Options):
    """How categorical features are imputed and encoded."""

    impute: Literal[CATEGORICAL_IMPUTE] = Field(
        "constant", description="constant: missing is a category (fill_value) of its own."
    )
    fill_value: str = MISSING_CATEGORY
    encode: Literal[ENCODERS] = Field(
        "onehot", description="ordinal: one integer column, -1 for categories not seen in training."
    )
    rare_min_frequency: int | float = Field(
        0,
        description="Categories rarer than this (a count, or a share of training rows) are "
        "grouped into one 'infrequent' category; 0: off.",
    )
    missing_indicator: bool = False

    @field_validator("rare_min_frequency")
    @classmethod
    def _rare(cls, value: int | float) -> int | float:
        return _check_rare(value)


class OutlierRule(_Options):
    """Bounds learnt from the training rows: Q1 - k*IQR .. Q3 + k*IQR, or two quantiles."""

    method: Literal["none", "iqr", "quantile"] = "none"
    action: Literal["clip", "drop"] = Field(
        "clip",
        description="clip: part of the served transform; drop: training rows outside the "
        "bounds are removed (never at serving time).",
    )
    iqr_k: float = Field(1.5, gt=0)
    quantiles: tuple[float, float] = (0.01, 0.99)

    @field_validator("quantiles")
    @classmethod
    def _ordered(cls, quantiles: tuple[float, float]) -> tuple[float, float]:
        low, high = quantiles
        if not 0 <= low < high <= 1:
            raise ValueError("expected [low, high] with 0 <= low < high <= 1")
        return quantiles


class OutlierOptions(OutlierRule):
    columns: list[str] = Field(
        default_factory=list, description="Numeric columns the rule applies to; empty: all."
    )


class ColumnOverride(_Options):
    """Per-column settings that replace `numeric` or `categorical` for that column.

    Which keys fit is checked against the column's kind when prepare runs.
    """

    impute: Literal[NUMERIC_IMPUTE + CATEGORICAL_IMPUTE] | None = None
    fill_value: float | str | None = None
    scale: Literal[SCALERS] | None = None
    missing_indicator: bool | None = None
    encode: Literal[ENCODERS] | None = None
    rare_min_frequency: int | float | None = None
    outliers: OutlierRule | None = None

    @field_validator("rare_min_frequency")
    @classmethod
    def _rare(cls, value: int | float | None) -> int | float | None:
        return _check_rare(value)

    def given(self) -> dict[str, Any]:
        """The keys this override sets (its other keys keep the kind's settings)."""
        return {
            key: getattr(self, key)
            for key in self.model_fields_set
            if getattr(self, key) is not None
        }


class BinsSpec(_Options):
    column: str
    edges: list[float]

    @field_validator("edges")
    @classmethod
    def _increasing(cls, edges: list[float]) -> list[float]:
        if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
            raise ValueError("edges must be two or more increasing numbers")
        return edges


class DerivedFeature(_Options):
    """One feature computed from raw features, inside the served pipeline.

    Exactly one of `ratio` ([numerator, denominator]; a zero denominator gives a missing value),
    `date_part` ([date column, part]) or `bins` ({column, edges}; intervals are [low, high),
    values below the first edge or at/above the last get bins of their own: the rule of
    components.common.binning).
    """

    name: str = Field(min_length=1)
    ratio: tuple[str, str] | None = None
    date_part: tuple[str, Literal[DATE_PARTS]] | None = None
    bins: BinsSpec | None = None
    kind: Literal["numeric", "categorical"] | None = Field(
        None,
        description="How the model sees it; default numeric for ratio and date_part "
        "(a number keeps order: month 11 is next to 12), categorical for bins (a label per "
        "interval).",
    )

    @model_validator(mode="after")
    def _one_source(self) -> "DerivedFeature":
        given = [k for k in ("ratio", "date_part", "bins") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of ratio, date_part or bins")
        if self.kind == "categorical" and self.ratio is not None:
            raise ValueError("a ratio is numeric; kind categorical fits date_part or bins")
        return self

    @property
    def source(self) -> str:
        return "ratio" if self.ratio else "date_part" if self.date_part else "bins"

    @property
    def output_kind(self) -> str:
        return self.kind or ("categorical" if self.bins is not None else "numeric")

    @property
    def inputs(self) -> list[str]:
        if self.ratio:
            return list(self.ratio)
        if self.date_part:
            return [self.date_part[0]]
        return [self.bins.column]


class PrepareOptions(_Options):
    """The `prepare:` section: the transform prepare fits on the training rows."""

    numeric: NumericOptions = Field(default_factory=NumericOptions)
    categorical: CategoricalOptions = Field(default_factory=CategoricalOptions)
    outliers: OutlierOptions = Field(default_factory=OutlierOptions)
    log_transform: list[str] = Field(
        default_factory=list,
        description="Numeric columns replaced by log(1 + x) before imputation and scaling; "
        "training values must be >= 0 (serving clips negatives at 0).",
    )
    exclude: list[str] = Field(
        default_factory=list,
        description="Features the model does not use (the server still takes them as input).",
    )
    columns: dict[str, ColumnOverride] = Field(default_factory=dict)
    derived: list[DerivedFeature] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> "PrepareOptions":
        seen: set[str] = set()
        for index, feature in enumerate(self.derived):
            if feature.name in seen:
                raise ValueError(f"derived[{index}]: name '{feature.name}' is used twice")
            seen.add(feature.name)
        return self


class SplitOptions(_Options):
    """The `split:` section: how the labelled rows are split into training and test rows."""

    test_size: float = Field(
        0.2, gt=0, lt=1, description="Held-out share of rows (of groups for strategy group)."
    )
    seed: int = 42
    strategy: Literal[SPLIT_STRATEGIES] = Field(
        "stratified",
        description="stratified: random, keeping class shares in expectation (classification; "
        "random for regression); random: each row's side from a hash of its key salted with "
        "seed, the same in every run; group: no group_column value on both sides; time: the "
        "newest rows by time_column are the test rows.",
    )
    group_column: str = ""
    time_column: str = ""
    key_columns: list[str] = Field(
        default_factory=list,
        description="random and stratified: the columns that identify a row, hashed to decide "
        "its side; empty: every column but the target (a row whose values change, or a table "
        "that gains a column, then moves).",
    )

    @model_validator(mode="after")
    def _columns_fit_strategy(self) -> "SplitOptions":
        for key, strategy in (("group_column", "group"), ("time_column", "time")):
            value = getattr(self, key)
            if self.strategy == strategy and not value:
                raise ValueError(f"strategy {strategy} needs {key}")
            if value and self.strategy != strategy:
                raise ValueError(f"{key} is only used by strategy {strategy}")
        if self.key_columns and self.strategy not in ("random", "stratified"):
            raise ValueError("key_columns is only used by strategies random and stratified")
        return self


def parse_prepare_options(options: dict | None) -> PrepareOptions:
    """The `prepare:` section as a checked model.

    Raises:
        PipelineInputError: one line naming the key, e.g. "prepare.numeric.scale: ...".
    """
    return parse_section(PrepareOptions, options, "prepare")


def parse_split_options(options: dict | None) -> SplitOptions:
    """The `split:` section as a checked model.

    Raises:
        PipelineInputError: one line naming the key, e.g. "split.strategy: ...".
    """
    return parse_section(SplitOptions, options, "split")
