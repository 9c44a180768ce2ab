"""Tuning on an existing Ray cluster: two real nodes on 127.0.0.1, and addresses that do not answer.

The two nodes are Ray's own test utility (`ray.cluster_utils.Cluster`): a head and one worker
node, each a raylet of its own, both bound to loopback (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, set
by importing components.tune). The test starts them and stops them, by handle, even on failure.
"""

import os
import socket
import subprocess
import sys

import pytest

import components.tune  # noqa: F401  (keeps Ray on loopback: imported before ray)
from components.common.errors import PipelineInputError
from components.common.ray_cluster import probe_cluster
from components.prepare.logic import build_preprocessor
from components.tune.logic import tune_model
from tests.components.conftest import descendant_pids, new_descendants, still_running


@pytest.mark.ray
def test_tuning_on_a_two_node_cluster_runs_trials_on_both_nodes(loans, loans_schema, tmp_path):
    import ray
    from ray.cluster_utils import Cluster

    before = descendant_pids()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    address = cluster.address
    try:
        cluster.add_node(num_cpus=1)
        best, trials = tune_model(
            loans,
            loans_schema,
            ["random_forest"],
            num_trials=6,
            cv_folds=2,
            metric="roc_auc",
            num_cpus=1,
            seed=0,
            space={"random_forest": {"n_estimators": 50}},
            # A reused worker takes the next trial wherever it is: on a loaded machine the
            # head's took all six before the worker node's first process was up (CI saw it).
            # Without reuse, the trial placed on the worker node waits for it.
            reuse_actors=False,
            address=address,
            storage_path=str(tmp_path / "tune"),
            preprocessor=build_preprocessor(loans_schema),
        )
        node_ids = {node["NodeID"][:12] for node in cluster.global_state.node_table()}
        addresses = {node["NodeManagerAddress"] for node in cluster.global_state.node_table()}
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert len(node_ids) == 2 and addresses == {"127.0.0.1"}
    assert (trials["status"] == "done").all() and len(trials) == 6
    # Trials ran on both nodes, and the driver only disconnected: the test stopped the cluster.
    assert set(trials["node"]) == node_ids
    assert best["nodes"] == 2 and best["ray"] == address
    assert best["experiment"].startswith(str(tmp_path / "tune"))
    leftover = still_running(new_descendants(before))
    assert not leftover


def test_an_address_where_nothing_listens_fails_with_a_clear_message():
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    with pytest.raises(
        PipelineInputError, match=rf"ray.address: cannot reach the Ray cluster at 127.0.0.1:{port}"
    ):
        probe_cluster(f"127.0.0.1:{port}", timeout_s=2)


def test_an_address_that_accepts_but_never_answers_fails_within_the_timeout(loans, loans_schema):
    # A socket that listens but never speaks: ray.init alone would retry here for minutes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(PipelineInputError, match="no Ray GCS answered within 3 s"):
            tune_model(
                loans,
                loans_schema,
                ["logistic_regression"],
                2,
                2,
                "roc_auc",
                1,
                0,
                address=address,
                connect_timeout_s=3,
                preprocessor=build_preprocessor(loans_schema),
            )


@pytest.mark.parametrize("address", ["mlpipe-tune-head-svc", "ray://head:port"])
def test_a_malformed_address_is_named(address):
    with pytest.raises(PipelineInputError, match=f"ray.address: '{address}' is not host:port"):
        probe_cluster(address)


@pytest.mark.parametrize(
    ("ray_address", "pinned"), [(None, "0"), ("local", "0"), ("head-svc:6379", None)]
)
def test_only_an_embedded_ray_is_pinned_to_loopback(ray_address, pinned):
    """Importing components.tune pins Ray to loopback unless the process joins a cluster (the
    tune step exports `ray.address` as RAY_ADDRESS first): a driver on 127.0.0.1 could not be
    reached by the cluster's nodes. A fresh interpreter: Ray reads the variable once."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    if ray_address is not None:
        env["RAY_ADDRESS"] = ray_address
    probe = "import os, components.tune; print(os.environ.get('RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER'))"
    result = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == str(pinned)


def test_ray_address_from_the_environment_is_used(monkeypatch):
    from components.common.ray_cluster import cluster_address

    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    assert cluster_address("") == "10.0.0.5:6379"
    assert cluster_address("head:6379") == "head:6379"
    monkeypatch.setenv("RAY_ADDRESS", "local")
    assert cluster_address("") == ""
