"""Drift of a window from a reference profile (components.common.drift): a real shift is found,
chance is not (Benjamini-Hochberg and the PSI floor), a small window gets no verdict."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from components.common.drift import NO_DRIFT, NOT_ENOUGH_DATA, PSI_EPSILON, compare, psi
from components.common.errors import PipelineInputError
from components.common.profile import PREDICTION_COLUMN, profile_frame

NUMERIC_FEATURES = [f"n{i}" for i in range(15)]
CATEGORICAL_FEATURES = [f"c{i}" for i in range(5)]
CATEGORIES = list("abcdefgh")
CATEGORY_SHARES = [0.3, 0.2, 0.15, 0.1, 0.1, 0.05, 0.05, 0.05]
SCHEMA = {
    "target": "y",
    "task": "regression",
    "features": [{"name": n, "kind": "numeric"} for n in NUMERIC_FEATURES]
    + [{"name": n, "kind": "categorical"} for n in CATEGORICAL_FEATURES],
}


def centre(i: int) -> float:
    return float(i)


def scale(i: int) -> float:
    return 1 + i / 5


def draw(rows: int, seed: int, shifts: dict | None = None) -> pd.DataFrame:
    """20 features: n_i normal (mean i, std 1 + i/5), c_i of CATEGORIES; `shifts` moves a numeric
    feature's mean by that many of its standard deviations."""
    rng = np.random.default_rng(seed)
    shifts = shifts or {}
    columns = {
        name: rng.normal(centre(i) + shifts.get(name, 0) * scale(i), scale(i), size=rows)
        for i, name in enumerate(NUMERIC_FEATURES)
    }
    for name in CATEGORICAL_FEATURES:
        columns[name] = rng.choice(CATEGORIES, size=rows, p=CATEGORY_SHARES)
    frame = pd.DataFrame(columns)
    frame[PREDICTION_COLUMN] = frame["n0"] + frame["n1"]
    return frame


@pytest.fixture(scope="module")
def reference() -> dict:
    frame = draw(100_000, seed=1)
    return profile_frame(frame, SCHEMA, predictions=frame[PREDICTION_COLUMN])


def intended_psi(reference: dict, name: str, shift: float) -> float:
    """The PSI a normal feature's mean shift of `shift` standard deviations has over the
    reference's bins, from the normal distribution itself (no sampling)."""
    i = NUMERIC_FEATURES.index(name)
    standard_edges = (np.asarray(reference["features"][name]["edges"]) - centre(i)) / scale(i)
    cdf = norm.cdf(np.concatenate([[-np.inf], standard_edges, [np.inf]]) - shift)
    return psi(np.diff(cdf), reference["features"][name]["shares"])


def test_a_window_from_the_same_distribution_drifts_nowhere(reference):
    result = compare(reference, draw(5000, seed=2))
    assert result.enough_data and result.verdict == NO_DRIFT
    assert result.drifted == []
    assert [c.name for c in result.columns] == [
        *NUMERIC_FEATURES,
        *CATEGORICAL_FEATURES,
        "prediction",
    ]
    assert all(c.p_value is not None and c.psi < 0.02 for c in result.columns)
    assert all(c.null_rate == 0 and c.null_rate_change == 0 for c in result.columns)
    json.dumps(result.to_dict(), allow_nan=False)


def test_a_real_shift_in_one_of_twenty_features_is_the_only_one_flagged(reference):
    # 0.45 standard deviations is a PSI of about 0.2 over deciles ("a significant shift").
    assert intended_psi(reference, "n7", 0.45) == pytest.approx(0.2, abs=0.01)
    result = compare(reference, draw(2000, seed=3, shifts={"n7": 0.45}))
    assert result.drifted == ["n7"]
    assert result.to_dict()["verdict"] == "drift"
    n7 = result.column("n7")
    assert n7.psi == pytest.approx(intended_psi(reference, "n7", 0.45), abs=0.05)
    assert n7.p_adjusted < 1e-6 and n7.test == "ks"


def test_a_shift_that_is_significant_but_small_raises_no_alarm_on_a_large_window(reference):
    """The false alarm of large windows: KS finds a 0.2 standard deviation shift in 50,000 rows,
    but its PSI is far below min_psi."""
    window = draw(50_000, seed=4, shifts={"n7": 0.2})
    result = compare(reference, window)
    n7 = result.column("n7")
    assert n7.p_adjusted < 0.05  # significant after the correction across 21 columns...
    assert n7.psi < 0.06  # ...but small,
    assert result.drifted == []  # so not flagged.
    # The PSI floor is what held it back: lowered below its PSI, the same window flags it.
    assert compare(reference, window, min_psi=0.03).drifted == ["n7"]


def test_a_window_below_min_rows_gets_no_verdict_however_far_it_moved(reference):
    window = draw(150, seed=5, shifts={"n7": 3.0})
    result = compare(reference, window)
    assert not result.enough_data and result.verdict == NOT_ENOUGH_DATA
    assert result.drifted == [] and not any(c.drifted for c in result.columns)
    assert result.column("n7").psi > 1  # measured, not judged
    assert result.column("n7").p_value is None
    assert compare(reference, window, min_rows=100).drifted == ["n7"]


def test_a_column_with_too_few_present_values_is_not_tested(reference):
    window = draw(1000, seed=6)
    window.loc[window.index[50:], "n3"] = np.nan
    window.loc[window.index[:100], "c1"] = None
    result = compare(reference, window)
    n3, c1 = result.column("n3"), result.column("c1")
    assert n3.rows == 50 and n3.p_value is None and n3.null_rate == pytest.approx(0.95)
    assert n3.null_rate_change == pytest.approx(0.95)
    assert c1.rows == 900 and c1.p_value is not None and c1.null_rate_change == pytest.approx(0.1)
    assert result.drifted == []


def test_unseen_categories_are_measured_and_a_new_category_drifts(reference):
    window = draw(1000, seed=7)
    window.loc[window.index[:300], "c2"] = "zzz"  # a category the reference never held
    window.loc[window.index[:20], "c3"] = "new"
    result = compare(reference, window)
    c2, c3 = result.column("c2"), result.column("c3")
    assert c2.unseen_share == 0.3 and c3.unseen_share == 0.02
    assert result.column("c0").unseen_share == 0
    assert result.column("n0").unseen_share is None
    # The reference had no "other" rows: a new category's share is measured against
    # PSI_EPSILON, so even 2% of one is a large PSI.
    assert c2.psi > 1 and c3.psi > 0.1
    assert result.drifted == ["c2", "c3"] and c2.test == "chi2"
    # PSI by hand: every recorded category occurs in the window; "new" is the other bin, which
    # the reference held none of.
    counts = window["c3"].value_counts() / len(window)
    by_hand = sum(
        (counts[k] - r) * np.log(counts[k] / r) for k, r in reference_c3_shares(reference)
    )
    by_hand += (0.02 - PSI_EPSILON) * np.log(0.02 / PSI_EPSILON)
    assert c3.psi == pytest.approx(by_hand)


def reference_c3_shares(reference: dict) -> list[tuple[str, float]]:
    shares = reference["features"]["c3"]
    assert shares["other_share"] == 0 and sorted(shares["shares"]) == CATEGORIES
    return list(shares["shares"].items())


def test_a_change_in_category_shares_is_flagged(reference):
    window = draw(1000, seed=8)
    rng = np.random.default_rng(8)
    window["c4"] = rng.choice(CATEGORIES, size=1000, p=CATEGORY_SHARES[::-1])
    assert compare(reference, window).drifted == ["c4"]


def test_predictions_are_compared_when_the_window_holds_them(reference):
    window = draw(1000, seed=9)
    window[PREDICTION_COLUMN] += 3
    assert compare(reference, window).drifted == [PREDICTION_COLUMN]
    assert compare(reference, window.drop(columns=PREDICTION_COLUMN)).drifted == []
    assert compare(reference, window).column(PREDICTION_COLUMN).role == "output"


def test_a_window_without_a_reference_feature_is_named(reference):
    window = draw(500, seed=10).drop(columns="c2")
    with pytest.raises(
        PipelineInputError,
        match=r"^column 'c2' \(a feature of the reference profile\) is not in the window$",
    ):
        compare(reference, window)


def test_a_malformed_reference_is_refused_before_any_comparison(reference):
    with pytest.raises(PipelineInputError, match=r"^the reference profile: key 'version' is 0"):
        compare({**reference, "version": 0}, draw(500, seed=11))


def test_false_alarms_are_rare_and_real_shifts_are_found_across_seeds(reference):
    """200 windows of 1,000 rows from the reference's own distribution: at most 2% flag
    anything. 40 windows with one feature shifted by 0.45 standard deviations (PSI 0.2): at
    least 90% flag exactly that feature."""
    quiet = [compare(reference, draw(1000, seed=s)) for s in range(200)]
    false_alarms = sum(bool(result.drifted) for result in quiet)
    # For the record: windows where the corrected test alone would have flagged something.
    significant = sum(any(c.p_adjusted < 0.05 for c in result.columns) for result in quiet)
    found = sum(
        compare(reference, draw(1000, seed=1000 + s, shifts={"n4": 0.45})).drifted == ["n4"]
        for s in range(40)
    )
    print(
        f"false alarms: {false_alarms}/200 windows ({significant} by the test alone); "
        f"shift found alone: {found}/40 windows"
    )
    assert false_alarms <= 0.02 * 200
    assert found >= 0.9 * 40
