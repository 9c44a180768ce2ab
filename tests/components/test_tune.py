import ipaddress

import psutil
import pytest

from components.common.errors import PipelineInputError
from components.prepare.logic import split_table
from components.tune.logic import default_metric, local_ray, tune_model
from components.tune.search_space import family_params, make_estimator, search_space


def test_search_space_is_flat_and_prefixed_by_family():
    space = search_space(["random_forest", "logistic_regression"], "classification")
    assert "family" in space
    assert {"logistic_regression.C", "random_forest.n_estimators"} <= set(space)
    assert not any(key.startswith("hist_gradient_boosting.") for key in space)


def test_family_params_takes_only_the_drawn_family():
    config = {"family": "random_forest", "random_forest.max_depth": 4, "logistic_regression.C": 1.0}
    assert family_params(config) == ("random_forest", {"max_depth": 4})


def test_estimators_are_seeded():
    estimator = make_estimator("random_forest", {"n_estimators": 5}, "classification", seed=3)
    assert estimator.get_params()["random_state"] == 3


@pytest.mark.parametrize(
    ("families", "task", "message"),
    [
        (["xgboost"], "classification", "unknown family 'xgboost'"),
        (["logistic_regression"], "regression", "'logistic_regression' does not do regression"),
        ([], "classification", "name at least one model family"),
    ],
)
def test_bad_families_fail_before_ray_starts(families, task, message):
    with pytest.raises(PipelineInputError, match=message):
        search_space(families, task)


def test_an_unknown_metric_is_named(loans, loans_schema):
    with pytest.raises(PipelineInputError, match="tuning.metric: 'auc_roc'"):
        tune_model(loans, loans_schema, ["logistic_regression"], 2, 2, "auc_roc", 1, 0)


def test_default_metric_fits_the_task(loans_schema):
    assert default_metric(loans_schema) == "roc_auc"
    assert default_metric({"task": "regression"}) == "r2"


def _ray_processes() -> set[int]:
    return {
        p.pid
        for p in psutil.process_iter(["name", "cmdline"])
        if "raylet" in (p.info["name"] or "") or "gcs_server" in (p.info["name"] or "")
    }


@pytest.mark.ray
def test_tuning_on_local_ray_finds_a_good_model_and_stops_ray(loans, loans_schema):
    before = _ray_processes()
    train, _ = split_table(loans, loans_schema, 0.25, seed=0)
    best, trials = tune_model(
        train,
        loans_schema,
        ["logistic_regression", "random_forest"],
        num_trials=4,
        cv_folds=3,
        metric="roc_auc",
        num_cpus=2,
        seed=0,
    )
    assert len(trials) == 4 and trials["error"].isna().all()
    assert best["family"] in {"logistic_regression", "random_forest"}
    assert best["cv_score"] == pytest.approx(trials["score"].max())
    # The label depends on income and region: a real model scores well above chance.
    assert best["cv_score"] > 0.75
    assert best["metric"] == "roc_auc" and best["num_trials"] == 4
    # The embedded Ray is shut down with the search: no raylet or GCS of ours is left.
    assert _ray_processes() <= before


def _is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1 is IPv4 loopback
    return (mapped or address).is_loopback


@pytest.mark.ray
def test_embedded_ray_listens_on_loopback_only():
    me = psutil.Process()
    already_running = {proc.pid for proc in me.children(recursive=True)}
    with local_ray(num_cpus=1):
        import ray

        assert {node["NodeManagerAddress"] for node in ray.nodes()} == {"127.0.0.1"}
        ours = [p for p in me.children(recursive=True) if p.pid not in already_running]
        listening = {
            (proc.pid, conn.laddr.ip)
            for proc in ours
            # psutil 6 renamed connections() to net_connections().
            for conn in getattr(proc, "net_connections", proc.connections)(kind="inet")
            if conn.status == psutil.CONN_LISTEN
        }
    assert listening, "Ray started no listening processes under this one"
    assert all(_is_loopback(ip) for _, ip in listening), listening
    assert not any(proc.is_running() and proc.status() != "zombie" for proc in ours)
