"""A table's reference profile: what a model version's training data and predictions looked like.

A profile is a plain JSON-ready dict of a few hundred kilobytes at most, whatever the rows: a
drift monitor (components.common.drift) compares a window of new data with it, without the
training data. Per column:

- numeric: the rows, the null rate, decile edges cut on the reference and the share of present
  values in each bin (binning's rule: the two end bins are open to -inf and +inf, so any value
  of a later window falls in a bin), mean, std, min, max, and a seeded sample of at most
  SAMPLE_SIZE present values for two-sample tests;
- categorical: the rows, the null rate, the shares of the `max_categories` most frequent
  categories and the share of all the others together (`other_share`).

Missing values (None, NaN, a non-finite number, MISSING_CATEGORY) count in the null rate only:
bins, shares and samples are of present values. Predictions are profiled like a feature (numeric
for regression, categorical for labels) under PREDICTION_COLUMN, each class's probability as a
numeric column named by probability_column: the columns a prediction log holds them in.
"""

import numpy as np
import pandas as pd

from components.common.binning import as_numbers, bin_index
from components.common.errors import PipelineInputError
from components.common.schema import CATEGORICAL, FEATURE_KINDS, MISSING_CATEGORY, NUMERIC

# Bumped when a key changes meaning or goes; check_profile refuses any other version.
PROFILE_VERSION = 1
# Enough values for a two-sample test to see a shift of a tenth of a standard deviation, few
# enough that twenty features stay a few hundred kilobytes of JSON.
SAMPLE_SIZE = 1000
# Sampled values are written with this many significant digits: every integer below 1e10 stays
# exact, and the JSON is a third smaller than Python's full repr.
SAMPLE_DIGITS = 10
SAMPLE_SEED = 0
PREDICTION_COLUMN = "prediction"

NUMERIC_KEYS = ("rows", "null_rate", "edges", "shares", "mean", "std", "min", "max", "sample")
CATEGORICAL_KEYS = ("rows", "null_rate", "shares", "other_share")


def probability_column(label) -> str:
    """The column of a class's predicted probability, e.g. probability_yes."""
    return f"probability_{label}"


def profile_frame(
    frame: pd.DataFrame,
    schema: dict,
    predictions=None,
    probabilities=None,
    max_categories: int = 50,
    bins: int = 10,
) -> dict:
    """The reference profile of the schema's features in `frame`, and of the model's outputs.

    Args:
        frame: the reference rows (a model version's training data).
        schema: the schema that validate wrote (features with their kinds; task; classes).
        predictions: optional, one per row: labels (classification) or numbers (regression).
        probabilities: optional, [rows, classes] in the order of schema["classes"], as the model
            server returns them.
        max_categories: categories kept per categorical column; the rest share `other_share`.
        bins: numeric bins cut at the reference's quantiles (10: deciles).

    Raises:
        PipelineInputError: a feature column is absent or has no values, or the outputs do not
            match the rows or the classes.
    """
    if max_categories < 1:
        raise PipelineInputError(f"max_categories: {max_categories}, expected at least 1")
    if bins < 2:
        raise PipelineInputError(f"bins: {bins}, expected at least 2")
    features = {}
    for feature in schema["features"]:
        name = feature["name"]
        if name not in frame.columns:
            raise PipelineInputError(f"column '{name}' (a feature) is not in the data")
        features[name] = profile_column(frame[name], feature["kind"], max_categories, bins, name)
    outputs = {}
    if predictions is not None:
        predictions = pd.Series(np.asarray(predictions, dtype=object))
        if len(predictions) != len(frame):
            raise PipelineInputError(
                f"predictions: {len(predictions)} values for {len(frame)} rows"
            )
        kind = NUMERIC if schema["task"] == "regression" else CATEGORICAL
        outputs[PREDICTION_COLUMN] = profile_column(
            predictions, kind, max_categories, bins, PREDICTION_COLUMN
        )
    if probabilities is not None:
        probabilities = np.asarray(probabilities, dtype=float)
        classes = schema.get("classes") or []
        if probabilities.shape != (len(frame), len(classes)):
            raise PipelineInputError(
                f"probabilities: shape {list(probabilities.shape)}, expected "
                f"[{len(frame)}, {len(classes)}] (rows, the schema's classes)"
            )
        for index, label in enumerate(classes):
            column = probability_column(label)
            outputs[column] = profile_column(
                pd.Series(probabilities[:, index]), NUMERIC, max_categories, bins, column
            )
    return {
        "version": PROFILE_VERSION,
        "rows": len(frame),
        "features": features,
        "outputs": outputs,
    }


def profile_column(values: pd.Series, kind: str, max_categories: int, bins: int, name: str) -> dict:
    """One column's profile (see the module docstring); `name` is for the error only."""
    if kind == NUMERIC:
        summary = numeric_profile(present_numbers(values), bins)
    elif kind == CATEGORICAL:
        summary = categorical_profile(present_text(values), max_categories)
    else:
        raise PipelineInputError(
            f"column '{name}': unknown kind '{kind}' (known: {', '.join(FEATURE_KINDS)})"
        )
    present = summary.pop("present")
    if present == 0:
        raise PipelineInputError(f"column '{name}' has no values to profile (every row is missing)")
    return {
        "kind": kind,
        "rows": len(values),
        "null_rate": (len(values) - present) / len(values),
        **summary,
    }


def present_numbers(values) -> np.ndarray:
    """The finite numbers of a column: missing values, text and ±inf dropped."""
    numbers = as_numbers(values)
    return numbers[np.isfinite(numbers)]


def present_text(values: pd.Series) -> pd.Series:
    """A column's present values as text; MISSING_CATEGORY counts as missing, as it stands for
    one in the model's input."""
    values = pd.Series(values).astype(object)
    present = values[values.notna()].astype(str)
    return present[present != MISSING_CATEGORY]


def numeric_profile(numbers: np.ndarray, bins: int) -> dict:
    if numbers.size == 0:
        return {"present": 0}
    # Inner edges only: binning's open end bins are the -inf and +inf ones (and JSON has no
    # infinity). Ties in the data make equal quantiles; one edge of each is enough.
    edges = np.unique(np.quantile(numbers, np.arange(1, bins) / bins))
    counts = np.bincount(bin_index(numbers, edges).astype(np.intp), minlength=len(edges) + 1)
    rng = np.random.default_rng(SAMPLE_SEED)
    sample = rng.choice(numbers, size=min(SAMPLE_SIZE, numbers.size), replace=False)
    return {
        "present": int(numbers.size),
        "edges": [float(edge) for edge in edges],
        "shares": (counts / numbers.size).tolist(),
        "mean": float(numbers.mean()),
        "std": float(numbers.std(ddof=1)) if numbers.size > 1 else 0.0,
        "min": float(numbers.min()),
        "max": float(numbers.max()),
        "sample": [float(f"{value:.{SAMPLE_DIGITS}g}") for value in sample],
    }


def categorical_profile(text: pd.Series, max_categories: int) -> dict:
    if text.empty:
        return {"present": 0}
    counts = text.value_counts()
    # Most frequent first; equal counts by name, so the same data keeps the same categories.
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    kept = ranked[:max_categories]
    kept_rows = sum(count for _, count in kept)
    return {
        "present": len(text),
        "shares": {category: count / len(text) for category, count in kept},
        "other_share": (len(text) - kept_rows) / len(text),
    }


# --- Checking a profile read back -----------------------------------------------------------


def check_profile(profile: dict, where: str) -> None:
    """Raise PipelineInputError, one line naming the key, unless `profile` is a profile of this
    version that the drift comparison can read. `where` names the profile (e.g. its file)."""
    if not isinstance(profile, dict):
        raise PipelineInputError(
            f"{where}: a profile is a JSON object, not {type(profile).__name__}"
        )
    if "version" not in profile:
        raise PipelineInputError(f"{where}: key 'version' is missing (not a profile?)")
    if profile["version"] != PROFILE_VERSION:
        raise PipelineInputError(
            f"{where}: key 'version' is {profile['version']!r}; this mlpipe reads profiles of "
            f"version {PROFILE_VERSION}"
        )
    for section in ("features", "outputs"):
        if not isinstance(profile.get(section), dict):
            raise PipelineInputError(f"{where}: key '{section}' is missing or not an object")
    if not profile["features"]:
        raise PipelineInputError(f"{where}: key 'features' is empty")
    for section in ("features", "outputs"):
        for name, summary in profile[section].items():
            _check_column(summary, f"{where}: key '{section}.{name}")


def _check_column(summary, key: str) -> None:
    """`key` is the message's start up to the column's key, its closing quote left open."""
    if not isinstance(summary, dict):
        raise PipelineInputError(f"{key}' is not an object")
    kind = summary.get("kind")
    if kind not in FEATURE_KINDS:
        raise PipelineInputError(
            f"{key}.kind' is {kind!r}, expected one of: {', '.join(FEATURE_KINDS)}"
        )
    for name in NUMERIC_KEYS if kind == NUMERIC else CATEGORICAL_KEYS:
        if name not in summary:
            raise PipelineInputError(f"{key}.{name}' is missing")
    if not _is_share(summary["null_rate"]):
        raise PipelineInputError(f"{key}.null_rate' is {summary['null_rate']!r}, expected 0 to 1")
    if kind == CATEGORICAL:
        shares = summary["shares"]
        if not isinstance(shares, dict) or not all(_is_share(s) for s in shares.values()):
            raise PipelineInputError(f"{key}.shares' is not an object of shares (0 to 1)")
        if not _is_share(summary["other_share"]):
            raise PipelineInputError(f"{key}.other_share' is not a share (0 to 1)")
        return
    edges, shares, sample = summary["edges"], summary["shares"], summary["sample"]
    if not _numbers(edges) or any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
        raise PipelineInputError(f"{key}.edges' is not a list of increasing numbers")
    if not _numbers(shares) or len(shares) != len(edges) + 1 or not all(map(_is_share, shares)):
        raise PipelineInputError(
            f"{key}.shares' is not {len(edges) + 1} shares (one per bin of its edges)"
        )
    if not _numbers(sample) or not sample:
        raise PipelineInputError(f"{key}.sample' is not a non-empty list of numbers")


def _numbers(values) -> bool:
    """A list of finite numbers (checked by numpy: a sample is a thousand of them)."""
    if not isinstance(values, list):
        return False
    array = np.asarray(values)
    return array.dtype.kind in "iuf" and bool(np.isfinite(array).all())


def _is_share(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1
