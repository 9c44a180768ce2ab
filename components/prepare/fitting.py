"""Fitting the preprocessing transform on millions of training rows in the memory and time of
the rows themselves (benchmarks/ingest_scale.py): `fit_without_output` gives the estimator that
`transform.fit(as_model_input(train))` gives, without building the transform's output."""

from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

from components.common.categoricals import occurring_categories
from components.common.columnwise import columnwise, thread_count
from components.common.transformers import NumericImputer

# Rows the assembled ColumnTransformer is fitted on once every branch is fitted (see below).
LAYOUT_ROWS = 1000
# Rows per chunk of a branch fitted by partial_fit (_fit_in_chunks): each chunk's copies stay in
# the processor's cache, and scikit-learn's checks of each call's input cost nothing in all.
CHUNK_ROWS = 65_536


def fit_without_output(transform, features: pd.DataFrame):
    """`transform.fit(as_model_input(...))`, without transforming every training row on the way.

    ColumnTransformer.fit is its fit_transform: it builds the whole output matrix (rows times
    every one-hot column, float64) and then a stacked copy of it, only to learn the output's
    layout. On 10 million rows that is over 8 GB (benchmarks/ingest_scale.py). Here each branch
    is fitted on all rows with its own fit (an encoder's fit only collects categories), and the
    ColumnTransformer learns its layout from the first LAYOUT_ROWS rows with those fitted
    branches frozen. An encoder that keeps only which values occur (no rare-category grouping)
    is fitted on one row per value, found from the codes of a categorical feature
    (`coded_with_token`), not on millions of strings. The result is the estimator a plain fit
    gives: the same fitted branches, output layout and parameters
    (tests/components/test_prepare_scale.py holds it to that).

    Args:
        transform: what build_preprocessor returns, unfitted.
        features: the training rows: as_model_input's output, or the same with categorical
            features as categoricals (`coded_with_token`).
    """
    if isinstance(transform, Pipeline):  # derived features, then the columns
        derive, columns = transform.steps[0][1], transform.steps[-1][1]
        features = _as_text(features)
        derive = clone(derive).fit(features)
        fitted = _fit_columns(columns, derive.transform(features))
        return Pipeline([(transform.steps[0][0], derive), (transform.steps[-1][0], fitted)])
    return _fit_columns(transform, features)


def _fit_columns(transform: ColumnTransformer, features: pd.DataFrame) -> ColumnTransformer:
    branches = [
        (name, branch, columns)
        for name, branch, columns in transform.transformers
        if not isinstance(branch, str) and len(columns) > 0  # "drop", "passthrough", no column
    ]
    # Each branch's columns, shared with `features` (a list of names would copy them), read
    # here in this thread. The branches are independent, and most of their fits' work is numpy's,
    # without Python's lock: each is fitted on a thread of its own.
    work = [
        (branch, pd.DataFrame({column: features[column] for column in columns}, copy=False))
        for _, branch, columns in branches
    ]
    fitted_branches = dict(
        zip([name for name, _, _ in branches], columnwise(_fit_branch, work), strict=True)
    )
    frozen = [
        (
            name,
            FrozenEstimator(fitted_branches[name]) if name in fitted_branches else branch,
            columns,
        )
        for name, branch, columns in transform.transformers
    ]
    fitted = clone(transform).set_params(transformers=frozen)
    fitted.fit(_as_text(features.iloc[:LAYOUT_ROWS]))
    # Unwrap: the fitted branches themselves, as a plain fit leaves them, and the unfitted spec
    # as the `transformers` parameter (what clone() and get_params() give).
    fitted.transformers_ = [
        (name, branch.estimator if isinstance(branch, FrozenEstimator) else branch, columns)
        for name, branch, columns in fitted.transformers_
    ]
    fitted.transformers = transform.transformers
    return fitted


def _fit_branch(work: tuple):
    """One branch of the ColumnTransformer, fitted on its columns of every training row."""
    branch, part = work
    if _learns_only_the_values(branch):
        return clone(branch).fit(_distinct_rows(part))
    fitted = _fit_in_chunks(branch, part)
    if fitted is None:
        fitted = clone(branch).fit(_as_one_array(_as_text(part)))
    return fitted


def _fit_in_chunks(branch, features: pd.DataFrame) -> Pipeline | None:
    """A numeric branch fitted without a copy of all its rows: its NumericImputer on the columns
    themselves (NumericImputer.fit), then each later step by partial_fit, on the rows the steps
    before it make, CHUNK_ROWS at a time.

    Plain Pipeline.fit makes a float64 copy of the rows for the imputer's fit, another for its
    output, and, in StandardScaler's fit, two more the size of that output: on 8 million rows of
    11 columns that was 2.8 GB of fresh memory and most of the prepare step's time
    (benchmarks/ingest_scale.py). scikit-learn's scalers learn the same statistics chunk by chunk
    (a minimum and maximum exactly, a mean and variance to within rounding;
    tests/components/test_prepare_scale.py).

    Returns:
        The fitted branch; None for a branch that is not a NumericImputer then steps with
        partial_fit, or whose input the imputer cannot read column by column.
    """
    if not isinstance(branch, Pipeline):
        return None
    (imputer_name, imputer), *later = branch.steps
    if not (isinstance(imputer, NumericImputer) and imputer.fits_by_column(features)):
        return None
    if not all(hasattr(step, "partial_fit") for _, step in later):
        return None
    imputer = clone(imputer).fit(features)
    fitted = [(imputer_name, imputer)]
    for name, step in later:  # one pass each: a step learns from the steps before it, all fitted
        step = clone(step)
        for rows in _chunks_through([before for _, before in fitted], features):
            step.partial_fit(rows)
        fitted.append((name, step))
    return clone(branch).set_params(steps=fitted)


def _chunks_through(steps: list, features: pd.DataFrame) -> Iterator[np.ndarray]:
    """What the fitted `steps` make of `features`, CHUNK_ROWS rows at a time, in order.

    The chunks are transformed on a thread per core, a few ahead of the caller, which learns
    from them meanwhile: a fitted step's transform changes nothing in it, and most of its time
    is numpy's, without Python's lock. An imputer that keeps every column and adds no indicator
    fills each chunk's array itself (NumericImputer.fill), the same values as its transform.
    """
    threads = thread_count()
    first, *rest = steps
    fills = isinstance(first, NumericImputer) and first.fills_in_place()

    def through(rows):
        if fills:  # copy: the array of a one-column chunk would be the table's own column
            rows = first.fill(rows.to_numpy(dtype=np.float64, copy=True))
        else:
            rows = first.transform(rows)
        for step in rest:
            rows = step.transform(rows)
        return rows

    with ThreadPoolExecutor(threads, thread_name_prefix="chunks") as pool:
        ahead: deque = deque()
        for start in range(0, len(features), CHUNK_ROWS):
            # The frame is sliced here, in the caller's thread; the threads only transform.
            ahead.append(pool.submit(through, features.iloc[start : start + CHUNK_ROWS]))
            if len(ahead) > 2 * threads:
                yield ahead.popleft().result()
        while ahead:
            yield ahead.popleft().result()


def _as_text(features: pd.DataFrame) -> pd.DataFrame:
    """The features as as_model_input gives them: categorical columns as str objects."""
    coded = [c for c, t in features.dtypes.items() if isinstance(t, pd.CategoricalDtype)]
    if not coded:
        return features
    return features.assign(**{c: np.asarray(features[c], dtype=object) for c in coded})


def _distinct_rows(features: pd.DataFrame) -> pd.DataFrame:
    """Rows that hold, column by column, exactly the values that occur in `features`, each at
    least once (a shorter column repeats its first value)."""
    values = []
    for _, column in features.items():
        if isinstance(column.dtype, pd.CategoricalDtype):  # from the codes: no string per row
            occurs = occurring_categories(column).to_numpy(dtype=object)
            values.append(np.append(occurs, np.nan) if column.isna().any() else occurs)
        else:
            values.append(pd.unique(column.to_numpy()))
    longest = max(len(v) for v in values)
    padded = [np.concatenate([v, np.repeat(v[:1], longest - len(v))]) for v in values]
    return pd.DataFrame(dict(enumerate(padded))).set_axis(features.columns, axis=1)


def _as_one_array(features: pd.DataFrame) -> pd.DataFrame:
    """Numeric features in one float64 array (a frame over it), converted once: scikit-learn
    makes that array of a frame of several columns, again at each step of a branch (an
    imputer's fit, then its transform). Other features are left as they are, and so are float32
    columns, which scikit-learn keeps as float32."""
    kinds = {t.kind for t in features.dtypes}
    if len(features.columns) < 2 or not kinds <= {"i", "u", "f"}:
        return features
    if np.result_type(*features.dtypes) not in (np.float64, np.int64, np.uint64):
        return features
    values = features.to_numpy(dtype=np.float64)
    return pd.DataFrame(values, index=features.index, columns=features.columns, copy=False)


def _learns_only_the_values(branch) -> bool:
    """An encoder whose fit keeps which values occur and nothing else: no counts (rare
    categories), no limit on their number. Fitted on one row per value, it is the same."""
    return (
        isinstance(branch, OneHotEncoder | OrdinalEncoder)
        and branch.min_frequency is None
        and branch.max_categories is None
    )
