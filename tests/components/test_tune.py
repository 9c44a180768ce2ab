import ipaddress
import json

import psutil
import pytest

from components.common.errors import PipelineInputError
from components.common.families import family_params, make_estimator
from components.prepare.logic import build_preprocessor, split_table
from components.tune.logic import default_metric, local_ray, tune_model
from components.tune.search_space import search_space
from tests.components.conftest import descendant_pids, new_descendants, still_running


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
        tune_model(
            loans,
            loans_schema,
            ["logistic_regression"],
            2,
            2,
            "auc_roc",
            1,
            0,
            preprocessor=build_preprocessor(loans_schema),
        )


def test_default_metric_fits_the_task(loans_schema):
    assert default_metric(loans_schema) == "roc_auc"
    assert default_metric({"task": "regression"}) == "r2"


def _our_ray_daemons(before: set[int]) -> list[psutil.Process]:
    """The raylet and GCS server this test started (its descendants, by PID) still running:
    another Ray on the same machine is not ours to count."""
    return [
        proc
        for proc in still_running(new_descendants(before))
        if proc.name() in ("raylet", "gcs_server")
    ]


@pytest.mark.ray
def test_tuning_on_local_ray_finds_a_good_model_and_stops_ray(loans, loans_schema):
    before = descendant_pids()
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
        preprocessor=build_preprocessor(loans_schema),
    )
    assert len(trials) == 4 and trials["error"].isna().all()
    assert best["family"] in {"logistic_regression", "random_forest"}
    assert best["cv_score"] == pytest.approx(trials["score"].max())
    # The label depends on income and region: a real model scores well above chance.
    assert best["cv_score"] > 0.75
    assert best["metric"] == "roc_auc" and best["num_trials"] == 4
    # The embedded Ray is shut down with the search: no raylet or GCS of ours is left.
    assert _our_ray_daemons(before) == []


def _is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1 is IPv4 loopback
    return (mapped or address).is_loopback


@pytest.mark.ray
def test_embedded_ray_listens_on_loopback_only():
    already_running = descendant_pids()
    with local_ray(num_cpus=1):
        import ray

        assert {node["NodeManagerAddress"] for node in ray.nodes()} == {"127.0.0.1"}
        ours = new_descendants(already_running)
        listening = {
            (proc.pid, conn.laddr.ip)
            for proc in ours
            # psutil 6 renamed connections() to net_connections().
            for conn in getattr(proc, "net_connections", proc.connections)(kind="inet")
            if conn.status == psutil.CONN_LISTEN
        }
    assert listening, "Ray started no listening processes under this one"
    assert all(_is_loopback(ip) for _, ip in listening), listening
    assert not still_running(ours)


# --- search space: defaults, overrides, and checks that run before Ray starts -----------------


def test_an_override_replaces_only_its_entry():
    space = search_space(
        ["random_forest"], "classification", {"random_forest": {"max_depth": {"randint": [2, 4]}}}
    )
    assert space["random_forest.max_depth"].lower == 2
    assert space["random_forest.max_depth"].upper == 5  # Ray's randint excludes its upper end
    assert space["random_forest.n_estimators"].upper == 201  # the default stays


def test_fixed_values_and_choices_are_allowed():
    space = search_space(
        ["random_forest"],
        "classification",
        {"random_forest": {"n_estimators": 30, "max_features": {"choice": ["sqrt", 0.5]}}},
    )
    assert space["random_forest.n_estimators"] == 30
    assert set(space["random_forest.max_features"].categories) == {"sqrt", 0.5}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"random_forest": {"max_depth": {"randint": [20, 3]}}},
            r"^tuning\.space\.random_forest\.max_depth: low 20 > high 3$",
        ),
        ({"xgboost": {"eta": {"uniform": [0, 1]}}}, r"^tuning\.space\.xgboost: unknown family"),
        (
            {"random_forest": {"max_deep": {"randint": [2, 3]}}},
            r"^tuning\.space\.random_forest\.max_deep: unknown hyperparameter of random_forest",
        ),
        (
            {"logistic_regression": {"C": {"normal": [0, 1]}}},
            r"^tuning\.space\.logistic_regression\.C: expected one of uniform, loguniform",
        ),
        (
            {"logistic_regression": {"C": {"loguniform": [0, 1]}}},
            r"^tuning\.space\.logistic_regression\.C: loguniform needs low > 0",
        ),
        (
            {"random_forest": {"max_depth": [3, 5]}},
            r"^tuning\.space\.random_forest\.max_depth: a list is not a distribution",
        ),
        ({"random_forest": {"max_depth": {"choice": []}}}, "choice needs a non-empty list"),
    ],
)
def test_a_bad_space_fails_before_ray_starts_naming_the_key(
    monkeypatch, loans, loans_schema, overrides, message
):
    import components.tune.logic as logic

    monkeypatch.setattr(logic, "ray_session", lambda *a, **k: pytest.fail("Ray was started"))
    with pytest.raises(PipelineInputError, match=message) as caught:
        tune_model(
            loans,
            loans_schema,
            ["random_forest", "logistic_regression"],
            2,
            2,
            "roc_auc",
            1,
            0,
            space=overrides,
            preprocessor=build_preprocessor(loans_schema),
        )
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("search", "grid", "tuning.search: 'grid'"),
        ("scheduler", "hyperband", "tuning.scheduler: 'hyperband'"),
        ("max_failures", -1, "tuning.max_failures: -1"),
    ],
)
def test_bad_search_settings_fail_before_ray_starts(
    monkeypatch, loans, loans_schema, option, value, message
):
    import components.tune.logic as logic

    monkeypatch.setattr(logic, "ray_session", lambda *a, **k: pytest.fail("Ray was started"))
    with pytest.raises(PipelineInputError, match=message):
        tune_model(
            loans,
            loans_schema,
            ["logistic_regression"],
            2,
            2,
            "",
            1,
            0,
            **{option: value},
            preprocessor=build_preprocessor(loans_schema),
        )


def test_the_run_config_checks_the_space_when_it_is_loaded(tmp_path):
    from pipelines.config import load_config
    from tests.conftest import write_config

    path = write_config(
        tmp_path / "run.yaml",
        **{"tuning.space": {"random_forest": {"max_depth": {"randint": [20, 3]}}}},
    )
    with pytest.raises(PipelineInputError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: key 'tuning.space': ")
    assert "tuning.space.random_forest.max_depth: low 20 > high 3" in message
    assert "\n" not in message


def test_the_demo_config_tunes_with_asha_and_passes_the_space_on():
    from pathlib import Path

    from pipelines.config import load_config, pipeline_arguments

    config = load_config(Path(__file__).parents[2] / "configs" / "arrests.yaml")
    arguments = pipeline_arguments(config)
    assert arguments["tuning"]["scheduler"] == "asha"
    assert json.loads(arguments["tuning"]["space"]) == config.tuning.space
    assert arguments["ray"]["address"] == "" and arguments["ray"]["storage_path"] == ""


def test_resource_steps_follow_the_milestones_then_the_trial_own_end():
    from components.tune.trainable import resource_steps

    # HGB with max_iter up to 270: milestones 3 and 9 of 27 are 30 and 90 rounds.
    assert resource_steps(200, 270, (3, 9)) == [(30, 3), (90, 9), (200, 20)]
    assert resource_steps(60, 270, (3, 9)) == [(30, 3), (60, 6)]
    assert resource_steps(270, 270, ()) == [(270, 27)]


def test_folds_see_only_their_training_rows_and_match_cross_val_score(loans, loans_schema):
    from sklearn.base import clone
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import Pipeline

    from components.common.schema import as_model_input
    from components.prepare.logic import build_preprocessor
    from components.tune.trainable import make_folds

    features, labels = as_model_input(loans, loans_schema), loans["approved"]
    folds = make_folds(
        features, labels, loans_schema, 3, seed=0, preprocessor=build_preprocessor(loans_schema)
    )
    ours = []
    for train_x, train_y, valid_x, valid_y in folds:
        model = make_estimator("logistic_regression", {"C": 1.0}, "classification", 0)
        model.fit(train_x, train_y)
        ours.append(model.score(valid_x, valid_y))
    pipeline = Pipeline(
        [
            ("prep", clone(build_preprocessor(loans_schema))),
            ("model", make_estimator("logistic_regression", {"C": 1.0}, "classification", 0)),
        ]
    )
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    assert ours == pytest.approx(list(cross_val_score(pipeline, features, labels, cv=cv)))


@pytest.mark.ray
def test_asha_stops_trials_early_and_only_a_finished_trial_can_win(loans, loans_schema):
    best, trials = tune_model(
        loans,
        loans_schema,
        ["hist_gradient_boosting"],
        num_trials=12,
        cv_folds=2,
        metric="roc_auc",
        num_cpus=2,
        seed=1,
        scheduler="asha",
        space={"hist_gradient_boosting": {"learning_rate": {"loguniform": [1e-4, 1.0]}}},
        preprocessor=build_preprocessor(loans_schema),
    )
    assert set(trials["status"]) <= {"done", "stopped"}
    stopped = trials[trials["status"] == "stopped"]
    assert len(stopped) >= 1 and best["stopped_trials"] == len(stopped)
    assert (stopped["budget"] < 27).all()
    assert best["cv_score"] == pytest.approx(trials.loc[trials["status"] == "done", "score"].max())
    assert best["scheduler"] == "asha" and best["nodes"] == 1


@pytest.mark.ray
def test_tpe_search_runs_and_reports_a_markdown_report(loans, loans_schema):
    from components.tune.logic import tune_report

    best, trials = tune_model(
        loans,
        loans_schema,
        ["logistic_regression"],
        4,
        2,
        "roc_auc",
        2,
        0,
        search="tpe",
        preprocessor=build_preprocessor(loans_schema),
    )
    assert len(trials) == 4 and (trials["status"] == "done").all()
    report = tune_report(best, trials)
    assert report.startswith("## Tuning") and "data:image/png;base64," in report
