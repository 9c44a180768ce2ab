"""The reference profile (components.common.profile): numeric bins and samples, category shares,
missing values, the model's outputs, its JSON size, and check_profile's one-line errors."""

import json

import numpy as np
import pandas as pd
import pytest

from components.common.errors import PipelineInputError
from components.common.profile import (
    PREDICTION_COLUMN,
    PROFILE_VERSION,
    SAMPLE_SIZE,
    check_profile,
    probability_column,
    profile_frame,
)
from components.common.schema import MISSING_CATEGORY


def schema_of(numeric=(), categorical=(), task="regression", classes=None) -> dict:
    features = [{"name": n, "kind": "numeric", "nullable": True} for n in numeric]
    features += [{"name": n, "kind": "categorical", "nullable": True} for n in categorical]
    schema = {"target": "y", "task": task, "features": features}
    if classes:
        schema["classes"] = classes
    return schema


def test_numeric_profile_has_decile_edges_and_equal_shares_of_a_known_column():
    frame = pd.DataFrame({"x": np.arange(100, dtype=float)[::-1]})
    profile = profile_frame(frame, schema_of(numeric=["x"]))
    x = profile["features"]["x"]
    assert profile["version"] == PROFILE_VERSION and profile["rows"] == 100
    assert x["kind"] == "numeric" and x["rows"] == 100 and x["null_rate"] == 0
    # numpy's linear quantile of 0..99 at q is 99q; with binning's rule (closed on the left)
    # each of the ten bins holds ten values.
    assert x["edges"] == pytest.approx([9.9 * k for k in range(1, 10)])
    assert x["shares"] == pytest.approx([0.1] * 10)
    assert x["mean"] == 49.5 and x["min"] == 0 and x["max"] == 99
    assert x["std"] == pytest.approx(np.arange(100).std(ddof=1))
    # Fewer rows than SAMPLE_SIZE: the sample is every value, once.
    assert sorted(x["sample"]) == list(range(100))


def test_ties_make_one_edge_and_a_constant_column_one_bin_above_it():
    frame = pd.DataFrame({"few": [0] * 80 + [1] * 10 + [2] * 10, "same": [7.0] * 100})
    profile = profile_frame(frame, schema_of(numeric=["few", "same"]))
    few, same = profile["features"]["few"], profile["features"]["same"]
    # Seven of the nine deciles are 0 (then 0.2 and 1.1, interpolated): one edge each.
    assert few["edges"] == pytest.approx([0, 0.2, 1.1])
    assert few["shares"] == pytest.approx([0, 0.8, 0.1, 0.1])
    assert same["edges"] == [7.0] and same["shares"] == [0.0, 1.0]
    assert same["std"] == 0


def test_the_sample_is_bounded_seeded_and_drawn_from_the_present_values():
    values = np.random.default_rng(3).normal(size=5000)
    values[:100] = np.nan
    frame = pd.DataFrame({"x": values})
    first = profile_frame(frame, schema_of(numeric=["x"]))["features"]["x"]
    again = profile_frame(frame, schema_of(numeric=["x"]))["features"]["x"]
    assert len(first["sample"]) == SAMPLE_SIZE
    assert first["sample"] == again["sample"]
    present = values[100:]
    # Ten significant digits: each sampled value is one of the column's, to that precision.
    nearest = np.abs(present[None, :] - np.asarray(first["sample"])[:, None]).min(axis=1)
    assert nearest.max() < 1e-9
    assert len(set(first["sample"])) == SAMPLE_SIZE  # without replacement


def test_missing_values_count_in_the_null_rate_only():
    frame = pd.DataFrame(
        {
            "x": [1.0, 2.0, None, np.nan, np.inf, "n/a", 3.0, 4.0],
            "c": ["a", "a", "b", None, np.nan, MISSING_CATEGORY, "b", "a"],
        }
    )
    profile = profile_frame(frame, schema_of(numeric=["x"], categorical=["c"]))
    x, c = profile["features"]["x"], profile["features"]["c"]
    # None, NaN, inf and text that is not a number: 4 of 8 missing.
    assert x["null_rate"] == 0.5
    assert x["min"] == 1 and x["max"] == 4 and x["mean"] == 2.5
    assert sum(x["shares"]) == pytest.approx(1)
    # None, NaN and the model input's token for missing: 3 of 8.
    assert c["null_rate"] == 3 / 8
    assert c["shares"] == {"a": 3 / 5, "b": 2 / 5} and c["other_share"] == 0


def test_categories_beyond_max_categories_share_other_and_ties_go_by_name():
    # Category k (0..59) appears 60 - k times; 12 and 13 tie with a changed count.
    values = [f"k{k:02d}" for k in range(60) for _ in range(60 - k)]
    values += ["k13"]  # k12 and k13 now both 48 times
    frame = pd.DataFrame({"c": values, "n": [str(v) for v in range(len(values))]})
    profile = profile_frame(frame, schema_of(categorical=["c", "n"]), max_categories=13)
    c = profile["features"]["c"]
    total = len(values)
    kept = [f"k{k:02d}" for k in range(13)]
    assert list(c["shares"]) == kept
    assert c["shares"]["k00"] == 60 / total and c["shares"]["k12"] == 48 / total
    assert c["other_share"] == pytest.approx((total - sum(60 - k for k in range(13))) / total)
    assert sum(c["shares"].values()) + c["other_share"] == pytest.approx(1)
    # All distinct: 13 kept, one row each, the rest other.
    n = profile["features"]["n"]
    assert len(n["shares"]) == 13 and n["other_share"] == (total - 13) / total


def test_predictions_and_probabilities_are_profiled_under_their_log_columns():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=1000)})
    positive = 1 / (1 + np.exp(-frame["x"].to_numpy()))
    probabilities = np.column_stack([1 - positive, positive])
    labels = np.where(positive >= 0.5, "yes", "no")
    schema = schema_of(numeric=["x"], task="classification", classes=["no", "yes"])
    profile = profile_frame(frame, schema, predictions=labels, probabilities=probabilities)
    outputs = profile["outputs"]
    assert list(outputs) == [PREDICTION_COLUMN, probability_column("no"), "probability_yes"]
    assert outputs[PREDICTION_COLUMN]["kind"] == "categorical"
    assert outputs[PREDICTION_COLUMN]["shares"]["yes"] == (labels == "yes").mean()
    assert outputs["probability_yes"]["kind"] == "numeric"
    assert outputs["probability_yes"]["mean"] == pytest.approx(positive.mean())
    assert outputs["probability_no"]["max"] == pytest.approx((1 - positive).max())

    regression = profile_frame(frame, schema_of(numeric=["x"]), predictions=frame["x"] * 2)
    assert regression["outputs"][PREDICTION_COLUMN]["kind"] == "numeric"
    assert regression["outputs"][PREDICTION_COLUMN]["max"] == pytest.approx(frame["x"].max() * 2)
    assert profile_frame(frame, schema_of(numeric=["x"]))["outputs"] == {}

    with pytest.raises(PipelineInputError, match=r"^probabilities: shape \[1000, 3\]"):
        profile_frame(frame, schema, probabilities=np.ones((1000, 3)) / 3)
    with pytest.raises(PipelineInputError, match=r"^predictions: 999 values for 1000 rows$"):
        profile_frame(frame, schema, predictions=labels[:-1])


def test_a_profile_round_trips_through_json_and_stays_small():
    rng = np.random.default_rng(1)
    rows = 100_000
    columns = {f"n{i}": rng.normal(i, 1 + i, size=rows) for i in range(16)}
    # Hundreds of categories: only max_categories of them are kept.
    columns.update({f"c{i}": rng.integers(0, 500, size=rows).astype(str) for i in range(4)})
    frame = pd.DataFrame(columns)
    schema = schema_of(
        numeric=[f"n{i}" for i in range(16)], categorical=[f"c{i}" for i in range(4)]
    )
    profile = profile_frame(frame, schema, predictions=frame["n0"])
    text = json.dumps(profile, allow_nan=False)  # strict JSON: no NaN or Infinity
    assert json.loads(text) == profile
    check_profile(json.loads(text), "profile.json")
    # 21 columns: the samples are most of it (1,000 numbers of about 15 characters each).
    assert len(text) < 21 * 18_000, len(text)
    # The size does not grow with the rows.
    smaller = profile_frame(frame.head(10_000), schema, predictions=frame["n0"].head(10_000))
    assert abs(len(json.dumps(smaller)) - len(text)) < 0.05 * len(text)


def test_a_feature_absent_or_without_values_is_named():
    frame = pd.DataFrame({"x": [1.0, 2.0], "empty": [None, None]})
    with pytest.raises(
        PipelineInputError, match=r"^column 'age' \(a feature\) is not in the data$"
    ):
        profile_frame(frame, schema_of(numeric=["x", "age"]))
    with pytest.raises(PipelineInputError, match=r"^column 'empty' has no values to profile"):
        profile_frame(frame, schema_of(categorical=["empty"]))


def valid_profile() -> dict:
    frame = pd.DataFrame({"age": np.arange(300.0), "city": ["a", "b", "c"] * 100})
    return profile_frame(frame, schema_of(numeric=["age"], categorical=["city"]))


def broken(change) -> dict:
    profile = valid_profile()
    change(profile)
    return profile


@pytest.mark.parametrize(
    ("profile", "message"),
    [
        ([1, 2], r"^p\.json: a profile is a JSON object, not list$"),
        (broken(lambda p: p.pop("version")), r"^p\.json: key 'version' is missing"),
        (broken(lambda p: p.update(version=2)), r"^p\.json: key 'version' is 2; this mlpipe"),
        (broken(lambda p: p.pop("outputs")), r"^p\.json: key 'outputs' is missing"),
        (broken(lambda p: p.update(features={})), r"^p\.json: key 'features' is empty$"),
        (
            broken(lambda p: p["features"]["age"].pop("sample")),
            r"^p\.json: key 'features\.age\.sample' is missing$",
        ),
        (
            broken(lambda p: p["features"]["age"].update(kind="text")),
            r"^p\.json: key 'features\.age\.kind' is 'text'",
        ),
        (
            broken(lambda p: p["features"]["age"]["shares"].pop()),
            r"^p\.json: key 'features\.age\.shares' is not 10 shares",
        ),
        (
            broken(lambda p: p["features"]["age"].update(edges=[3, 2, 1])),
            r"^p\.json: key 'features\.age\.edges' is not a list of increasing numbers$",
        ),
        (
            broken(lambda p: p["features"]["city"].update(null_rate=1.5)),
            r"^p\.json: key 'features\.city\.null_rate' is 1\.5",
        ),
        (
            broken(lambda p: p["features"]["city"].update(shares=["a"])),
            r"^p\.json: key 'features\.city\.shares' is not an object",
        ),
    ],
)
def test_check_profile_names_the_key_that_is_wrong(profile, message):
    with pytest.raises(PipelineInputError, match=message) as error:
        check_profile(profile, "p.json")
    assert "\n" not in str(error.value)


def test_check_profile_accepts_a_profile_it_wrote():
    check_profile(valid_profile(), "p.json")
