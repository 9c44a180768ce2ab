"""The few transforms scikit-learn has no built-in for: outlier clipping, log(1 + x), and
derived features; and NumericImputer, scikit-learn's SimpleImputer with a faster median. Each is
a plain estimator that pickles with joblib and runs inside the served Pipeline, so the model
server applies exactly what training applied.

NumericImputer converts to ONNX as a SimpleImputer, and the clipper and log(1 + x) with the
project's own converters (components.export.logic registers them all): Min and Max with two
constant vectors, and Max then Log(Add) nodes. Derived ratios and bins convert too (Div, and
comparisons with the edges: components.export.converters); date parts do not (they are parsed
from text, which ONNX cannot do), so a model that uses one is served without an edge graph and
the export report says why.
"""

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.impute import SimpleImputer
from sklearn.utils.validation import check_is_fitted, validate_data

from components.common.binning import bin_index, bin_values
from components.common.columnwise import columnwise
from components.common.schema import MISSING_CATEGORY


class NumericImputer(SimpleImputer):
    """scikit-learn's SimpleImputer, with a median that selects instead of sorting, and a fit that
    reads a table's columns where it can instead of copying them into one array.

    SimpleImputer takes a median through numpy's masked arrays, which sort a masked copy of the
    whole input: on 8 million rows of 12 columns that was 10 s of an 18 s fit, and several
    copies of the input in memory (benchmarks/ingest_scale.py). Here each column's median is a
    selection, and the same value (tests/components/test_prepare_scale.py). Every other
    strategy, the indicator and transform are SimpleImputer's own; the ONNX export converts it
    as a SimpleImputer (components.export.logic). The columns' medians are taken on every core.
    """

    def fit(self, X, y=None):
        """SimpleImputer's fit. For a table of numbers (see `fits_by_column`), the medians and the
        indicator's columns come from each column as it is held, without the float64 copy of
        the whole table that SimpleImputer's fit makes first: on 8 million rows that copy was
        most of the fit's time and memory. The fitted imputer is the one SimpleImputer's fit gives
        (tests/components/test_prepare_scale.py)."""
        if not self.fits_by_column(X):
            return super().fit(X, y)
        columns = [X.iloc[:, i].to_numpy(dtype=np.float64, copy=False) for i in range(X.shape[1])]
        missing = columnwise(np.isnan, columns)
        # SimpleImputer's own fit, on one row that holds each column's first value (missing in a
        # column without any), sets what depends on the input's form and on which columns are
        # empty: the feature names and count, the fill value and dtype, a constant's statistics.
        first = X.iloc[:1].copy()
        for i, column_missing in enumerate(missing):
            if column_missing[0] and not column_missing.all():
                first.iloc[0, i] = columns[i][np.argmin(column_missing)]
        super().fit(first)
        if self.add_indicator:
            self._fit_indicator(np.column_stack(missing))
        if self.strategy == "median":
            self.statistics_ = np.array(
                columnwise(lambda i: self._median(columns[i][~missing[i]]), range(len(columns))),
                dtype=np.float64,
            )
        return self

    def fits_by_column(self, X) -> bool:
        """Whether `fit` reads X column by column: a DataFrame of numpy integer and float columns
        that SimpleImputer would make one float64 array of, NaN as the missing value, and the
        median or constant strategy (those with a value per column that needs no other column)."""
        if not isinstance(X, pd.DataFrame) or X.shape[0] == 0 or X.shape[1] == 0:
            return False
        dtypes = list(X.dtypes)
        return (
            self.strategy in ("median", "constant")
            and _is_nan(self.missing_values)
            and all(isinstance(t, np.dtype) and t.kind in "iuf" for t in dtypes)
            and np.result_type(*dtypes) == np.float64
        )

    def fills_in_place(self) -> bool:
        """Whether `fill` is this fitted imputer's transform: it keeps every column (each has a
        finite value to impute) and adds no indicator columns."""
        statistics = np.asarray(self.statistics_, dtype=np.float64)
        return self.indicator_ is None and bool(np.isfinite(statistics).all())

    def fill(self, rows: np.ndarray) -> np.ndarray:
        """`transform` of a float64 array of the fitted columns, for an imputer that
        `fills_in_place`: each NaN replaced by its column's value, in `rows` itself, without
        SimpleImputer's checks of its input (most of its time on a chunk of a few thousand
        rows)."""
        statistics = np.asarray(self.statistics_, dtype=np.float64)
        np.copyto(rows, statistics, where=np.isnan(rows))
        return rows

    def _median(self, present: np.ndarray) -> float:
        """The median of a column's present values, which it may reorder; for a column without
        any, 0 with keep_empty_features, else NaN (the column is dropped), as SimpleImputer."""
        count = len(present)
        if count == 0:
            return 0.0 if self.keep_empty_features else np.nan
        # np.median's value, from one selection instead of its two: numpy selects a single
        # position with its vectorised partition, several times faster than the two positions
        # np.median asks for. The lower middle of an even count is then the largest value below.
        half = count // 2
        present.partition(half)
        upper = present[half]
        if count % 2:
            return float(upper)
        return float((present[:half].max() + upper) / 2)

    def _dense_fit(self, X, strategy, missing_values, fill_value):
        if strategy != "median" or not _is_nan(missing_values) or X.dtype.kind != "f":
            return super()._dense_fit(X, strategy, missing_values, fill_value)
        missing = np.isnan(X)
        self._fit_indicator(missing)  # as SimpleImputer's _dense_fit does
        # Each column's median on its own thread: selection runs without Python's lock. The
        # present values are a copy already, which the selection may reorder (no second copy).
        return np.array(
            columnwise(lambda c: self._median(X[~missing[:, c], c]), range(X.shape[1])),
            dtype=np.float64,
        )


def _is_nan(value) -> bool:
    return isinstance(value, float) and np.isnan(value)


def outlier_bounds(
    values: np.ndarray, method: str, iqr_k: float, quantiles: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Per column, the lowest and highest value kept: Q1 - k*IQR and Q3 + k*IQR, or two quantiles.

    Missing values are ignored; a column without any value gets unbounded limits.
    """
    values = np.asarray(values, dtype=float)
    if values.ndim == 1:
        values = values[:, None]
    empty = np.isnan(values).all(axis=0)
    # nanquantile warns on all-missing columns; those get infinite bounds below anyway.
    filled = np.where(empty, 0.0, values)
    if method == "iqr":
        q1, q3 = np.nanquantile(filled, [0.25, 0.75], axis=0)
        lower, upper = q1 - iqr_k * (q3 - q1), q3 + iqr_k * (q3 - q1)
    elif method == "quantile":
        lower, upper = np.nanquantile(filled, list(quantiles), axis=0)
    else:
        raise ValueError(f"unknown outlier method '{method}'")
    return np.where(empty, -np.inf, lower), np.where(empty, np.inf, upper)


class OutlierClipper(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Clips each column to bounds learnt from the rows it was fitted on (see outlier_bounds).

    Missing values stay missing, for the imputer after it. Not ONNX-convertible as is.

    Args:
        method: "iqr" or "quantile".
        iqr_k: the k of Q1 - k*IQR .. Q3 + k*IQR.
        quantiles: (low, high) quantiles for method "quantile".
    """

    def __init__(
        self, method: str = "iqr", iqr_k: float = 1.5, quantiles: tuple = (0.01, 0.99)
    ) -> None:
        self.method = method
        self.iqr_k = iqr_k
        self.quantiles = quantiles

    def fit(self, X, y=None):
        values = validate_data(self, X, ensure_all_finite="allow-nan", dtype=float)
        self.lower_, self.upper_ = outlier_bounds(values, self.method, self.iqr_k, self.quantiles)
        return self

    def transform(self, X):
        check_is_fitted(self, "lower_")
        values = validate_data(self, X, ensure_all_finite="allow-nan", dtype=float, reset=False)
        return np.clip(values, self.lower_, self.upper_)


def log1p_nonnegative(values):
    """log(1 + x) of max(x, 0): training refuses negative values, serving clips them at 0.

    Missing values stay missing (np.maximum keeps NaN). Used through a FunctionTransformer, which
    skl2onnx does not convert.
    """
    return np.log1p(np.maximum(np.asarray(values, dtype=float), 0.0))


def _numbers(values: pd.Series) -> np.ndarray:
    return pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)


def parse_dates(values: pd.Series) -> pd.Series:
    """Strings (or datetimes) as UTC timestamps; the missing token and unparseable text as NaT.

    Categorical features reach the model as strings (as_model_input), at training and at serving
    time alike, so dates are always parsed from the same text. Values with a UTC offset are read
    in UTC; values without one are taken as they are.
    """
    if pd.api.types.is_datetime64_any_dtype(values):
        return pd.to_datetime(values, utc=True)
    text = values.astype(object).where(values.notna() & (values != MISSING_CATEGORY), None)
    # ISO 8601 parses fast and covers Parquet datetimes turned into text; anything else is
    # tried again value by value.
    parsed = pd.to_datetime(text, errors="coerce", format="ISO8601", utc=True)
    retry = parsed.isna() & text.notna()
    if retry.any():
        parsed[retry] = pd.to_datetime(text[retry], errors="coerce", format="mixed", utc=True)
    return parsed


def _date_part(dates: pd.Series, part: str) -> np.ndarray:
    accessor = dates.dt
    values = {
        "year": accessor.year,
        "quarter": accessor.quarter,
        "month": accessor.month,
        "day": accessor.day,
        "dayofweek": accessor.dayofweek,
        "dayofyear": accessor.dayofyear,
        "hour": accessor.hour,
    }[part]
    return values.to_numpy(dtype=float, na_value=np.nan)


def _as_categories(numbers: np.ndarray) -> np.ndarray:
    """Numbers as the strings a categorical encoder expects, the missing token for NaN."""
    out = np.full(len(numbers), MISSING_CATEGORY, dtype=object)
    present = ~np.isnan(numbers)
    out[present] = [str(c) for c in numbers[present].astype(int)]
    return out


def derive(frame: pd.DataFrame, feature: dict) -> np.ndarray:
    """The values of one derived feature (a `DerivedFeature` of the options, as a dict)."""
    categorical = feature["kind"] == "categorical"
    if feature.get("ratio"):
        numerator, denominator = (_numbers(frame[c]) for c in feature["ratio"])
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = numerator / denominator
        # A zero denominator is a missing value for the imputer, never an infinity.
        return np.where(np.isfinite(ratio), ratio, np.nan)
    if feature.get("date_part"):
        column, part = feature["date_part"]
        numbers = _date_part(parse_dates(frame[column]), part)
        return _as_categories(numbers) if categorical else numbers
    # components.common.binning's rule: [low, high), open end bins, missing stays missing.
    bins = feature["bins"]
    values = frame[bins["column"]]
    if categorical:
        return bin_values(values, bins["edges"], missing=MISSING_CATEGORY)
    return bin_index(values, bins["edges"])


class DerivedFeatures(TransformerMixin, BaseEstimator):
    """Adds declared features (ratios, date parts, bins) to the frame, keeping its columns.

    The first step of the served transform: the server receives raw features only, and this
    step computes the rest exactly as in training. It learns nothing from the data.

    Args:
        features: each a dict with name, kind ("numeric" or "categorical") and one of
            ratio [numerator, denominator], date_part [column, part] or bins {column, edges}.
    """

    def __init__(self, features: list | None = None) -> None:
        self.features = features

    def fit(self, X, y=None):
        if not isinstance(X, pd.DataFrame):
            raise TypeError("DerivedFeatures needs a DataFrame with the feature columns")
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.n_features_in_ = len(X.columns)
        return self

    def transform(self, X):
        check_is_fitted(self, "feature_names_in_")
        if not isinstance(X, pd.DataFrame):
            raise TypeError("DerivedFeatures needs a DataFrame with the feature columns")
        out = X.copy()
        for feature in self.features or []:
            out[feature["name"]] = derive(X, feature)
        return out

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        check_is_fitted(self, "feature_names_in_")
        names = [*self.feature_names_in_, *(f["name"] for f in self.features or [])]
        return np.asarray(names, dtype=object)
