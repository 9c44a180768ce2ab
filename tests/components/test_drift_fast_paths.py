"""The monitor's fast paths give what the plain ones give: drift's KS test on a large sorted
window is scipy's ks_2samp, its category counts are present_text's, its bin counts numeric_psi's;
the prediction log read through Arrow is the frame pandas would have built file by file."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy.stats import ks_2samp

from components.common.drift import (
    KS_EXACT_MAX,
    category_counts,
    ks_test,
    numeric_psi,
    present_counts,
    psi,
    recorded_counts,
    sorted_bin_counts,
)
from components.common.prediction_log import read_prediction_log
from components.common.profile import MISSING_CATEGORY, numeric_profile, present_text


@pytest.mark.parametrize("rows", [500, KS_EXACT_MAX + 1, 200_000])
@pytest.mark.parametrize("shift", [0.0, 0.02, 0.2])
def test_the_ks_test_is_scipys(rows, shift):
    rng = np.random.default_rng(rows)
    # Rounded: many ties, which is where a hand-made KS statistic would go wrong.
    window = np.sort(np.round(rng.normal(shift, 1, rows), 2))
    sample = np.round(rng.normal(0, 1, 1000), 2)
    expected = ks_2samp(window, sample)
    statistic, p_value = ks_test(window, sample)
    assert statistic == pytest.approx(expected.statistic, abs=1e-12)
    assert p_value == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-300)


def test_sorted_bin_counts_are_numeric_psis():
    rng = np.random.default_rng(0)
    reference = numeric_profile(np.round(rng.lognormal(0, 1, 5000), 1), 10)
    window = np.round(rng.lognormal(0.1, 1, 20_000), 1)
    counts = sorted_bin_counts(reference, np.sort(window))
    assert counts.sum() == window.size
    assert psi(counts / window.size, reference["shares"]) == pytest.approx(
        numeric_psi(reference, window)
    )


def test_category_counts_in_one_pass_are_present_texts():
    values = pd.Series(["a", "b", None, "a", np.nan, MISSING_CATEGORY, 1, "1", True, "zz"] * 3)
    reference = {"shares": {"a": 0.5, "1": 0.3, "b": 0.1}, "other_share": 0.1}
    counts = present_counts(values)
    assert int(counts.sum()) == len(present_text(values))
    expected = category_counts(reference, present_text(values))
    observed = recorded_counts(reference, counts)
    assert observed[0].tolist() == expected[0].tolist() and observed[1] == expected[1]


def test_the_log_read_through_arrow_is_the_frame_pandas_builds(tmp_path):
    folder = tmp_path / "model=m" / "date=2026-12-01"
    folder.mkdir(parents=True)
    frames = []
    for number in range(3):
        table = pa.table(
            {
                "request_id": [f"r{number}-{i}" for i in range(4)],
                "row": [0, 1, 2, 3],
                "time": pa.array(
                    pd.to_datetime([3 - number] * 4, unit="h", utc=True), pa.timestamp("us", "UTC")
                ),
                "model_version": ["v1"] * 4,
                "colour": ["red", None, "blue", "red"],
                "size": [1.0, None, 3.0, 4.0],
                "prediction": ["yes", "no", "yes", None],
            }
        )
        pq.write_table(table, folder / f"part-{number}.parquet")
        frames.append(table.to_pandas())
    frame, skipped = read_prediction_log(str(tmp_path), "m")
    expected = pd.concat(frames, ignore_index=True).sort_values("time", kind="stable")
    expected = expected.reset_index(drop=True)
    expected.insert(3, "model", "m")
    assert skipped == []
    pd.testing.assert_frame_equal(frame, expected)
    assert frame["colour"].dtype == object and frame["colour"][1] is None
