import json

import pytest

from tests.conftest import SHARED_DATA


@pytest.mark.e2e
@pytest.mark.ray
def test_the_tune_benchmark_smoke_mode_runs(tmp_path):
    if not (SHARED_DATA / "adult.csv").exists():
        pytest.skip(
            f"the Adult data is not here ({SHARED_DATA / 'adult.csv'}): ../shared is absent"
        )
    from benchmarks.tune_adult import main

    output = tmp_path / "tune.json"
    assert main(["--smoke", "--output", str(output)]) == 0
    results = json.loads(output.read_text())
    assert set(results["ratios"]) >= {"ray_over_randomized_search_cv", "two_nodes_over_one_node"}
    assert results["cluster_two_nodes"]["failed_trials"] == 0
    assert 0.5 < results["quality"]["test_roc_auc"] <= 1
