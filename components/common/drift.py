"""Drift: whether a window of new data still looks like a model version's reference profile.

Each profiled column (components.common.profile) of the window is compared with the reference
two ways, and a column drifts only when both say so:

- how much it moved: the population stability index (PSI) over the reference's bins (numeric)
  or its recorded categories plus one bin for all others (categorical);
- whether the move is more than chance: a two-sample Kolmogorov-Smirnov test against the
  reference's stored sample (numeric) or a chi-squared test of the window's category counts
  against the reference's shares (categorical), its p-value corrected across all the columns
  compared with Benjamini-Hochberg.

Both are needed because each alone raises false alarms: on a large window every test is
significant for a shift too small to matter, and on a small one PSI is noisy (a few rows make a
bin's share jump). A window with fewer than `min_rows` rows gets no verdict but "not enough
data", and neither does a column with fewer than `min_rows` present values.

A column's null-rate change and its share of unseen categories are reported, not judged: missing
values are outside the bins, the samples and the tests.
"""

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import chisquare, false_discovery_control, ks_2samp, kstwo

from components.common.errors import PipelineInputError
from components.common.profile import check_profile, present_numbers, present_text
from components.common.schema import MISSING_CATEGORY, NUMERIC

# An empty bin's share (in the window or the reference) is taken as this in PSI: ln(0) has no
# value. Far below a decile's 0.1, it only bounds the term of an emptied or new bin, to about
# share * ln(share / 1e-4) (0.1 emptied: 0.69).
PSI_EPSILON = 1e-4

DRIFT = "drift"
NO_DRIFT = "no drift"
NOT_ENOUGH_DATA = "not enough data"


@dataclass
class ColumnDrift:
    """One column of the window against the reference.

    Attributes:
        name: the column.
        kind: numeric or categorical.
        role: "feature" or "output" (a prediction or a probability).
        rows: the window's present values in this column.
        null_rate: the window's share of missing values.
        null_rate_change: null_rate minus the reference's.
        unseen_share: categorical: the share of the window's present values whose category is
            not among the reference's recorded ones (when the reference had more than its
            max_categories, some are its rarest); None for a numeric column.
        psi: the population stability index; None when the window has no present value.
        test: "ks" or "chi2".
        statistic: the test's statistic; None when the column was not tested.
        p_value: the test's p-value; None when the column was not tested.
        p_adjusted: the Benjamini-Hochberg p-value across the tested columns; None when not
            tested.
        drifted: p_adjusted < alpha and psi >= min_psi, in a window with enough data.
    """

    name: str
    kind: str
    role: str
    rows: int
    null_rate: float
    null_rate_change: float
    unseen_share: float | None
    psi: float | None
    test: str
    statistic: float | None = None
    p_value: float | None = None
    p_adjusted: float | None = None
    drifted: bool = False


@dataclass
class DriftResult:
    """A window's comparison with a reference profile.

    Attributes:
        rows: the window's rows.
        enough_data: rows >= min_rows; when False no column drifts, whatever its numbers.
        alpha, min_psi, min_rows: the thresholds the verdict used.
        columns: per compared column, features first in the profile's order, then outputs.
        drifted: the names of the columns that drifted.
    """

    rows: int
    enough_data: bool
    alpha: float
    min_psi: float
    min_rows: int
    columns: list[ColumnDrift] = field(default_factory=list)
    drifted: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        if not self.enough_data:
            return NOT_ENOUGH_DATA
        return DRIFT if self.drifted else NO_DRIFT

    def column(self, name: str) -> ColumnDrift:
        return next(column for column in self.columns if column.name == name)

    def to_dict(self) -> dict:
        """JSON-ready: the fields, and the verdict."""
        return {**asdict(self), "verdict": self.verdict}


def compare(
    reference: dict,
    window: pd.DataFrame,
    alpha: float = 0.05,
    min_psi: float = 0.1,
    min_rows: int = 200,
) -> DriftResult:
    """The window's drift from the reference profile (see the module docstring).

    Every reference feature must be a column of the window; the reference's outputs (prediction,
    probabilities) are compared when the window holds them, as a prediction log does.

    Raises:
        PipelineInputError: the profile is malformed, or the window lacks a reference feature.
    """
    check_profile(reference, "the reference profile")
    for name in reference["features"]:
        if name not in window.columns:
            raise PipelineInputError(
                f"column '{name}' (a feature of the reference profile) is not in the window"
            )
    result = DriftResult(len(window), len(window) >= min_rows, alpha, min_psi, min_rows)
    compared = [("feature", name, summary) for name, summary in reference["features"].items()]
    compared += [
        ("output", name, summary)
        for name, summary in reference["outputs"].items()
        if name in window.columns
    ]
    for role, name, summary in compared:
        result.columns.append(compare_column(name, role, summary, window[name], min_rows))

    tested = [column for column in result.columns if column.p_value is not None]
    if tested:
        # BH keeps the expected share of false alarms among the flagged columns at alpha, and,
        # when nothing drifted, the chance of any alarm in the window at alpha too.
        adjusted = false_discovery_control([column.p_value for column in tested], method="bh")
        for column, p_adjusted in zip(tested, adjusted, strict=True):
            column.p_adjusted = float(p_adjusted)
            column.drifted = bool(
                result.enough_data and p_adjusted < alpha and column.psi >= min_psi
            )
    result.drifted = [column.name for column in result.columns if column.drifted]
    return result


def compare_column(
    name: str, role: str, reference: dict, values: pd.Series, min_rows: int
) -> ColumnDrift:
    """One column's PSI, null-rate change and, with min_rows present values, its test."""
    numeric = reference["kind"] == NUMERIC
    if numeric:
        # Sorted once: the bins' counts and the KS statistic both read the sorted values.
        present = present_numbers(values)  # a copy: sorting it leaves the window alone
        present.sort()
        count = len(present)
    else:
        counts = present_counts(values)
        count = int(counts.sum())
    null_rate = (len(values) - count) / len(values) if len(values) else 0.0
    column = ColumnDrift(
        name=name,
        kind=reference["kind"],
        role=role,
        rows=count,
        null_rate=null_rate,
        null_rate_change=null_rate - reference["null_rate"],
        unseen_share=None,
        psi=None,
        test="ks" if numeric else "chi2",
    )
    if numeric:
        if count:
            column.psi = psi(sorted_bin_counts(reference, present) / count, reference["shares"])
        if count >= min_rows:
            column.statistic, column.p_value = ks_test(
                present, np.asarray(reference["sample"], dtype=float)
            )
        return column
    observed, unseen = recorded_counts(reference, counts)
    if count:
        column.unseen_share = unseen / count
        column.psi = psi(observed / count, reference_shares(reference))
    if count >= min_rows:
        column.statistic, column.p_value = category_test(reference, observed)
    return column


def psi(window_shares: np.ndarray, reference_shares: np.ndarray) -> float:
    """Σ (window - reference) · ln(window / reference) over the bins, shares floored at
    PSI_EPSILON."""
    window_shares = np.maximum(np.asarray(window_shares, dtype=float), PSI_EPSILON)
    reference_shares = np.maximum(np.asarray(reference_shares, dtype=float), PSI_EPSILON)
    return float(
        np.sum((window_shares - reference_shares) * np.log(window_shares / reference_shares))
    )


def numeric_psi(reference: dict, numbers: np.ndarray) -> float:
    """PSI of present numbers over the reference's bins (binning's rule, open ends)."""
    edges = reference["edges"]
    # bin_index's codes (binning's rule) without its parsing: the numbers are finite already.
    codes = np.searchsorted(np.asarray(edges, dtype=np.float64), numbers, side="right")
    counts = np.bincount(codes, minlength=len(edges) + 1)
    return psi(counts / numbers.size, reference["shares"])


def sorted_bin_counts(reference: dict, ordered: np.ndarray) -> np.ndarray:
    """numeric_psi's bin counts of numbers already sorted: one search per edge, not per value."""
    below = np.searchsorted(ordered, np.asarray(reference["edges"], dtype=np.float64), "left")
    return np.diff(np.concatenate([[0], below, [ordered.size]]))


# scipy's ks_2samp computes its p-value exactly up to this many values per side (its 'auto').
KS_EXACT_MAX = 10_000


def ks_test(ordered: np.ndarray, sample: np.ndarray) -> tuple[float, float]:
    """The two-sided two-sample Kolmogorov-Smirnov test of sorted window values against the
    reference's sample: scipy's ks_2samp, the same statistic and p-value.

    Above KS_EXACT_MAX window values scipy's own asymptotic p-value (kstwo at the effective
    size) is used on the same statistic, found here from the sorted window: ks_2samp searches
    the window for every value of both samples, a second or so for a million values, where the
    window's own empirical CDF at its sorted values needs no search.
    """
    if ordered.size <= KS_EXACT_MAX:
        test = ks_2samp(ordered, sample)
        return float(test.statistic), float(test.pvalue)
    sample = np.sort(sample)
    n_window, n_sample = ordered.size, sample.size
    # Both empirical CDFs at every value of both samples, as ks_2samp evaluates them. At the
    # window's values: the window's CDF at the last of each run of equal values is its place.
    last = np.flatnonzero(np.append(ordered[1:] != ordered[:-1], True))
    window_at_window = (last + 1) / n_window
    sample_at_window = np.searchsorted(sample, ordered[last], "right") / n_sample
    window_at_sample = np.searchsorted(ordered, sample, "right") / n_window
    sample_at_sample = np.searchsorted(sample, sample, "right") / n_sample
    statistic = float(
        max(
            np.abs(window_at_window - sample_at_window).max(),
            np.abs(window_at_sample - sample_at_sample).max(),
        )
    )
    larger, smaller = max(n_window, n_sample), min(n_window, n_sample)
    effective = np.round(larger * smaller / (larger + smaller))
    return statistic, float(np.clip(kstwo.sf(statistic, effective), 0, 1))


def present_counts(values) -> pd.Series:
    """A categorical column's counts of present values by category as text (present_text's
    values, counted in one pass over the column instead of three)."""
    values = pd.Series(values)
    counts = values.value_counts(dropna=True)
    if not counts.index.map(type).isin([str]).all():
        if values.dtype == object:
            # Mixed Python values count 1, 1.0 and True as one; their texts differ.
            counts = present_text(values).value_counts()
        else:
            counts = counts.groupby(counts.index.astype(str)).sum()
    return counts.drop(MISSING_CATEGORY, errors="ignore")


def recorded_counts(reference: dict, counts: pd.Series) -> tuple[np.ndarray, int]:
    """category_counts from a column's present_counts."""
    recorded = counts.reindex(list(reference["shares"]), fill_value=0).to_numpy()
    others = int(counts.sum()) - int(recorded.sum())
    return np.append(recorded, others), others


def reference_shares(reference: dict) -> np.ndarray:
    """A categorical reference's shares: its recorded categories, then all others."""
    return np.array([*reference["shares"].values(), reference["other_share"]], dtype=float)


def category_counts(reference: dict, text: pd.Series) -> tuple[np.ndarray, int]:
    """The window's counts in the reference's categories then "all others", and how many of its
    values are in no recorded category."""
    counts = text.value_counts()
    recorded = counts.reindex(list(reference["shares"]), fill_value=0).to_numpy()
    others = len(text) - int(recorded.sum())
    return np.append(recorded, others), others


def category_test(reference: dict, observed: np.ndarray) -> tuple[float, float]:
    """Chi-squared goodness of fit of the window's counts to the reference's shares."""
    # PSI's floor here too: a category the reference never held is expected rarely, not never
    # (an expected count of 0 has no chi-squared term).
    expected = np.maximum(reference_shares(reference), PSI_EPSILON)
    if reference["other_share"] == 0 and observed[-1] == 0:
        # No "others" on either side: a cell that is empty by construction would only add a
        # degree of freedom and make the test conservative.
        expected, observed = expected[:-1], observed[:-1]
    if len(observed) < 2:
        return 0.0, 1.0  # one category on both sides: nothing can differ
    expected = expected / expected.sum() * observed.sum()
    test = chisquare(observed, expected)
    statistic, p_value = float(test.statistic), float(test.pvalue)
    return statistic, p_value if math.isfinite(p_value) else 1.0
