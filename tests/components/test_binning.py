"""The one binning rule (components.common.binning), and the three places that cut a number at
edges following it: the ETL's derive bins, prepare's derived bins and the bias bands."""

import math

import numpy as np
import pandas as pd
import pytest

from components.common.binning import bin_index, bin_labels, bin_values, edge_text
from components.common.errors import PipelineInputError
from components.common.groups import MISSING_GROUP, sensitive_groups
from components.common.schema import MISSING_CATEGORY
from components.common.settings.etl import DeriveStep
from components.common.transformers import DerivedFeatures
from components.ingest.snapshot import apply_transforms


def test_bins_are_half_open_with_open_ends_and_missing_stays_missing():
    values = [-5, 0, 17.9, 18, 64.99, 65, 1000, None, np.nan, "n/a"]
    codes = bin_index(values, [0, 18, 65])
    np.testing.assert_array_equal(codes[:7], [0, 1, 1, 2, 2, 3, 3])
    assert np.isnan(codes[7:]).all()
    assert bin_labels([0, 18, 65]) == ["< 0", "[0, 18)", "[18, 65)", ">= 65"]
    assert list(bin_values(values, [0, 18, 65], missing="?")) == [
        "< 0",
        "[0, 18)",
        "[0, 18)",
        "[18, 65)",
        "[18, 65)",
        ">= 65",
        ">= 65",
        "?",
        "?",
        "?",
    ]


def test_labels_name_the_inner_bins_or_every_bin():
    assert bin_labels([0, 40, 120], ["young", "older"]) == ["< 0", "young", "older", ">= 120"]
    every = ["none", "young", "older", "oldest"]
    assert bin_labels([0, 40, 120], every) == every
    with pytest.raises(ValueError, match="3 labels for 3 edges: give 2 .* or 4"):
        bin_labels([0, 40, 120], ["a", "b", "c"])


def test_edges_are_written_exactly_and_infinite_edges_are_the_open_ends():
    assert [edge_text(e) for e in (18, 18.0, 0.5, 1e6, -2.25)] == [
        "18",
        "18",
        "0.5",
        "1e+06",
        "-2.25",
    ]
    # "g" would write both as 1.23457e+06: the label keeps every digit instead.
    assert edge_text(1234567) == "1234567" and edge_text(0.1234567) == "0.1234567"
    assert bin_labels([-math.inf, 10, 20, math.inf])[1:4] == ["< 10", "[10, 20)", ">= 20"]


# --- the three sites agree ------------------------------------------------------------------


def _etl(values: list, edges: list) -> list:
    step = DeriveStep.model_validate(
        {"derive": {"name": "b", "bins": {"column": "x", "edges": edges}}}
    )
    frame = pd.DataFrame({"x": pd.array(values, dtype="Float64")})
    out = apply_transforms(frame, [step])["b"]
    return [None if pd.isna(v) else v for v in out]


def _prepare(values: list, edges: list, kind: str) -> np.ndarray:
    feature = {"name": "b", "bins": {"column": "x", "edges": edges}, "kind": kind}
    frame = pd.DataFrame({"x": np.array([np.nan if v is None else v for v in values])})
    return DerivedFeatures([feature]).fit(frame).transform(frame)["b"].to_numpy()


def _bias(values: list, edges: list) -> list:
    frame = pd.DataFrame({"x": np.array([np.nan if v is None else v for v in values])})
    return list(sensitive_groups(frame, "x", {"x": edges}))


@pytest.mark.parametrize(
    ("values", "edges", "expected"),
    [
        (
            [-1, 0, 17, 18, 24.5, 25, 119, 120, 300, None],
            [0, 18, 25, 120],
            [
                "< 0",
                "[0, 18)",
                "[0, 18)",
                "[18, 25)",
                "[18, 25)",
                "[25, 120)",
                "[25, 120)",
                ">= 120",
                ">= 120",
                None,
            ],
        ),
        (
            [0.1, 0.25, 0.5, 0.75, 0.99, 1.0, None],
            [0.25, 0.5, 1.0],
            ["< 0.25", "[0.25, 0.5)", "[0.5, 1)", "[0.5, 1)", "[0.5, 1)", ">= 1", None],
        ),
        ([-3.0, 2.0, None], [-2, 2], ["< -2", ">= 2", None]),
    ],
)
def test_etl_prepare_and_bias_bin_the_same_values_the_same_way(values, edges, expected):
    assert _etl(values, edges) == expected
    missing_as = {MISSING_CATEGORY: None}
    assert [missing_as.get(v, v) for v in _prepare(values, edges, "categorical")] == expected
    assert [None if v == MISSING_GROUP else v for v in _bias(values, edges)] == expected
    # prepare's numeric bins are the codes of the same bins.
    labels = bin_labels(edges)
    codes = _prepare(values, edges, "numeric")
    assert [None if np.isnan(c) else labels[int(c)] for c in codes] == expected


def test_etl_bins_take_labels_for_the_inner_bins_or_every_bin():
    def named(labels):
        spec = {"column": "x", "edges": [0, 40, 120], "labels": labels}
        step = DeriveStep.model_validate({"derive": {"name": "b", "bins": spec}})
        frame = pd.DataFrame({"x": [-1.0, 30.0, 50.0, 130.0, np.nan]})
        return apply_transforms(frame, [step])["b"].tolist()

    assert named(["young", "older"]) == ["< 0", "young", "older", ">= 120", None]
    assert named(["none", "young", "older", "oldest"]) == ["none", "young", "older", "oldest", None]
    with pytest.raises(ValueError, match=r"2 labels \(one per pair of edges\) or 4"):
        named(["a", "b", "c"])


def test_bias_bands_on_text_are_still_refused():
    with pytest.raises(PipelineInputError, match="bands are for numeric columns"):
        sensitive_groups(pd.DataFrame({"x": ["a"]}), "x", {"x": [0, 1]})
