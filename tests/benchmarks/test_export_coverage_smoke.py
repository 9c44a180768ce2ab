"""The export coverage benchmark's smoke mode, so that it cannot rot: it records one outcome per
configuration and a share that follows from them (never how fast)."""

import json

import numpy as np

from benchmarks.export_coverage import draw, main, summarize


def test_smoke_mode_exports_every_configuration_it_enumerates(tmp_path):
    output = tmp_path / "export_coverage.json"
    assert main(["--smoke", "--output", str(output)]) == 0
    results = json.loads(output.read_text())
    assert "--smoke" in results["command"]
    runs = results["results"]
    assert {r["family"] for r in runs} == {
        "logistic_regression",
        "random_forest",
        "hist_gradient_boosting",
        "sgd_linear",
    }
    assert {r["prepare"] for r in runs} == {"defaults", "all convertible at once"}
    # Derived ratios and bins, one-hot rare grouping, clipping, log and indicators all convert.
    assert [r for r in runs if r["outcome"] != "exported"] == []
    assert results["configurations"] == len(runs) and results["share_exported"] == 1.0


def test_the_share_leaves_out_the_random_draw_mitigations_only():
    plain = {"family": "f", "prepare": "defaults", "mitigation": "none"}
    results = [
        {**plain, "outcome": "exported"},
        {**plain, "prepare": "derived date part", "outcome": "refused", "reason": "date_part"},
        {**plain, "mitigation": "reweighing", "outcome": "exported"},
        {**plain, "mitigation": "threshold_optimizer", "outcome": "refused", "reason": "draw"},
    ]
    summary = summarize(results)
    assert summary["configurations"] == 3 and summary["share_exported"] == round(2 / 3, 4)
    assert summary["share_by_prepare_group"] == {"defaults": 1.0, "derived date part": 0.0}
    assert [r["mitigation"] for r in summary["left_out"]] == ["threshold_optimizer"]


def test_hyperparameters_are_drawn_within_the_space():
    rng = np.random.default_rng(0)
    for _ in range(50):
        assert 3 <= draw({"randint": [3, 4]}, rng) <= 4
        assert 0.02 <= draw({"loguniform": [0.02, 0.3]}, rng) <= 0.3
        assert draw({"choice": ["l2", "elasticnet"]}, rng) in ("l2", "elasticnet")
    assert {draw({"randint": [3, 4]}, rng) for _ in range(50)} == {3, 4}  # both ends
    assert draw(100, rng) == 100
