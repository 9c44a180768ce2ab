"""Incremental updates of a champion: each family's rule on small synthetic tables, the champion
left as it was, the result shaped as the champion (threshold kept) and stored as train stores."""

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.metrics import log_loss
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from components.common.errors import PipelineInputError
from components.common.families import FAMILIES
from components.common.incremental import (
    MIN_NEW_TREES,
    ROWS_SEEN_ATTRIBUTE,
    new_tree_count,
    update_model,
)
from components.common.metrics import with_threshold
from components.common.mitigation import ExponentiatedGradientModel
from components.common.registry import ModelRegistry
from components.common.schema import as_model_input
from components.common.update_rules import UPDATE_RULES, IncrementalNotSupported, update_rule
from components.ingest.synthetic import make_table
from components.prepare.logic import fit_preprocessor
from components.train.logic import fit_model
from components.validate.logic import validate_table

SEED = 3
SGD = {"alpha": 1e-3}
FOREST = {"n_estimators": 20, "max_depth": 6}
HGB = {"max_iter": 15, "max_leaf_nodes": 8}


@pytest.fixture(scope="module", autouse=True)
def one_native_thread():
    """Boosting's OpenMP threads stall when other work loads a 2-core machine."""
    with threadpool_limits(1):
        yield


def rows(count: int, number: int, relation: str = "reference") -> pd.DataFrame:
    return make_table(count, seed=SEED, number=number, relation=relation).to_pandas()


@pytest.fixture(scope="module")
def old():
    frame = rows(3000, 0)
    schema = validate_table(frame, "default", "classification", [], {})
    return frame, schema, fit_preprocessor(frame, schema)


def champion_of(old, family: str, params: dict):
    frame, schema, preprocessor = old
    return fit_model(frame, schema, preprocessor, {"family": family, "params": params}, SEED)


def predictions(model, frame, schema) -> np.ndarray:
    features = as_model_input(frame, schema)
    if hasattr(model, "predict_proba"):
        return model.predict_proba(features)
    return model.predict(features)


def test_every_family_has_a_rule_and_an_unknown_one_names_the_config_key():
    assert {family: update_rule(family) for family in FAMILIES} == {
        "logistic_regression": "refit_window",
        "linear_regression": "refit_window",
        "random_forest": "warm_start",
        "hist_gradient_boosting": "refit_window",
        "sgd_linear": "partial_fit",
    }
    assert set(UPDATE_RULES) == set(FAMILIES)
    with pytest.raises(PipelineInputError, match=r"^tuning.families: unknown family 'xgb'"):
        update_rule("xgb")


def test_partial_fit_moves_the_champion_toward_the_new_relation_and_leaves_it_alone(old):
    _, schema, _ = old
    champion = champion_of(old, "sgd_linear", SGD)
    new, holdout = rows(3000, 1, "changed"), rows(2000, 2, "changed")
    before = predictions(champion, holdout, schema)
    coefficients = champion.steps[-1][1].coef_.copy()

    updated, details = update_model(champion, new, schema, "sgd_linear", SGD, SEED)

    assert details["rule"] == "partial_fit" and details["rows"] == 3000
    assert details["updates_after"] == details["updates_before"] + 3000
    assert not np.allclose(updated.steps[-1][1].coef_, coefficients)
    # The champion is untouched: the same coefficients, the same answers.
    np.testing.assert_array_equal(champion.steps[-1][1].coef_, coefficients)
    np.testing.assert_array_equal(predictions(champion, holdout, schema), before)
    # The preprocessor is the champion's, fitted as it was.
    features = as_model_input(holdout, schema)
    np.testing.assert_array_equal(
        updated[:-1].transform(features), champion[:-1].transform(features)
    )
    truth = holdout["default"]
    assert log_loss(truth, predictions(updated, holdout, schema)) < log_loss(truth, before)


def test_partial_fit_updates_a_regressor_and_a_multiclass_classifier(old):
    frame, _, _ = old
    regression = frame.drop(columns="default").assign(
        score=frame["income"].fillna(0) / 1000 + frame["late_payments"].fillna(0)
    )
    schema = validate_table(regression, "score", "regression", [], {})
    champion = fit_model(
        regression,
        schema,
        fit_preprocessor(regression, schema),
        {"family": "sgd_linear", "params": SGD},
        SEED,
    )
    new = regression.assign(score=regression["score"] + 50)  # the same rows, a shifted target
    updated, details = update_model(champion, new, schema, "sgd_linear", SGD, SEED)
    assert details["rule"] == "partial_fit"
    features = as_model_input(new, schema)
    assert (updated.predict(features) - champion.predict(features)).mean() > 1

    tiers = frame.assign(tier=pd.cut(frame["credit_score"].fillna(600), 3, labels=["a", "b", "c"]))
    tiers = tiers.drop(columns=["default", "credit_score"]).assign(
        tier=lambda f: f.tier.astype(str)
    )
    schema = validate_table(tiers, "tier", "classification", [], {})
    champion = fit_model(
        tiers,
        schema,
        fit_preprocessor(tiers, schema),
        {"family": "sgd_linear", "params": SGD},
        SEED,
    )
    updated, _ = update_model(champion, tiers.tail(500), schema, "sgd_linear", SGD, SEED)
    assert updated.steps[-1][1].classes_.tolist() == ["a", "b", "c"]
    assert predictions(updated, tiers, schema).shape == (len(tiers), 3)


def test_warm_start_keeps_the_old_trees_and_grows_new_ones_on_the_new_rows(old):
    _, schema, _ = old
    champion = champion_of(old, "random_forest", FOREST)
    new = rows(1000, 1)
    before = predictions(champion, new, schema)

    updated, details = update_model(champion, new, schema, "random_forest", FOREST, SEED)

    grown = new_tree_count(20, 3000, 1000)
    assert grown == MIN_NEW_TREES  # 20 trees x 1000 / 4000 rows = 5, raised to the minimum
    assert details == {"rule": "warm_start", "rows": 1000, "trees_before": 20, "trees_after": 30}
    forest, old_forest = updated.steps[-1][1], champion.steps[-1][1]
    assert len(forest.estimators_) == 30 and len(old_forest.estimators_) == 20
    for kept, original in zip(forest.estimators_[:20], old_forest.estimators_, strict=False):
        np.testing.assert_array_equal(kept.tree_.threshold, original.tree_.threshold)
        assert kept.random_state == original.random_state
    # The new trees were grown on 1000 rows, not 3000: they have fewer samples at the root.
    assert all(tree.tree_.n_node_samples[0] <= 1000 for tree in forest.estimators_[20:])
    assert forest.warm_start is False
    np.testing.assert_array_equal(predictions(champion, new, schema), before)
    assert not np.allclose(predictions(updated, new, schema), before)


def test_the_number_of_new_trees_follows_the_new_rows_share_within_bounds():
    assert new_tree_count(100, 600_000, 50_000) == 10  # 7.7 trees: the minimum
    assert new_tree_count(100, 100_000, 100_000) == 50
    assert new_tree_count(100, 1_000, 1_000_000) == 100  # never more than the forest had
    assert new_tree_count(100, None, 5_000) == MIN_NEW_TREES


def test_the_caller_may_name_how_many_trees_to_grow(old):
    _, schema, _ = old
    champion = champion_of(old, "random_forest", FOREST)
    updated, details = update_model(
        champion, rows(500, 1), schema, "random_forest", FOREST, SEED, new_trees=3
    )
    assert details["trees_after"] == 23 == len(updated.steps[-1][1].estimators_)


@pytest.mark.parametrize(
    ("family", "params"), [("logistic_regression", {"C": 0.5}), ("hist_gradient_boosting", HGB)]
)
def test_refit_window_is_a_fresh_fit_of_the_champions_recipe_on_the_window(old, family, params):
    _, schema, preprocessor = old
    champion = champion_of(old, family, params)
    window, holdout = rows(2000, 1), rows(500, 2)

    updated, details = update_model(champion, window, schema, family, params, SEED)

    assert details == {"rule": "refit_window", "rows": 2000, "refit": "window"}
    fresh_preprocessor = clone(preprocessor).fit(as_model_input(window, schema))
    fresh = fit_model(
        window, schema, fresh_preprocessor, {"family": family, "params": params}, SEED
    )
    np.testing.assert_allclose(
        predictions(updated, holdout, schema), predictions(fresh, holdout, schema)
    )
    assert updated.steps[-1][1] is not champion.steps[-1][1]
    assert updated[0] is not champion[0]


def test_histogram_boosting_is_refit_never_warm_started(old):
    _, schema, _ = old
    champion = champion_of(old, "hist_gradient_boosting", HGB)
    updated, details = update_model(
        champion, rows(1000, 1), schema, "hist_gradient_boosting", HGB, SEED
    )
    boosting = updated.steps[-1][1]
    assert details["rule"] == "refit_window"
    assert boosting.warm_start is False and boosting.n_iter_ == HGB["max_iter"]  # not 2 x 15
    # Its bin edges are the window's own, not the champion's.
    assert any(
        not np.array_equal(new, old_edges)
        for new, old_edges in zip(
            boosting._bin_mapper.bin_thresholds_,
            champion.steps[-1][1]._bin_mapper.bin_thresholds_,
            strict=True,
        )
    )


def test_a_tuned_threshold_is_kept_around_the_updated_model(old):
    frame, schema, _ = old
    pipeline = champion_of(old, "sgd_linear", SGD)
    champion = with_threshold(pipeline, 0.3, 1, as_model_input(frame, schema), frame["default"])
    new = rows(1000, 1)

    updated, details = update_model(champion, new, schema, "sgd_linear", SGD, SEED)

    assert type(updated) is type(champion) and updated.threshold == 0.3 == details["threshold"]
    inner = updated.estimator.estimator
    features = as_model_input(new, schema)
    expected = np.where(inner.predict_proba(features)[:, 1] >= 0.3, 1, 0)
    np.testing.assert_array_equal(updated.predict(features), expected)
    assert not np.allclose(inner.steps[-1][1].coef_, pipeline.steps[-1][1].coef_)


def test_the_updated_model_round_trips_through_the_registry(old, tmp_path):
    _, schema, _ = old
    champion = champion_of(old, "random_forest", FOREST)
    registry = ModelRegistry(str(tmp_path / "store"), "loans")
    registry.register(champion, {"schema": schema})
    loaded, _ = registry.load("v1")
    new = rows(800, 1)
    updated, _ = update_model(loaded, new, schema, "random_forest", FOREST, SEED)
    path = tmp_path / "model.joblib"
    joblib.dump(updated, path)
    version = registry.register_pickled(path.read_bytes(), {"schema": schema})
    again, _ = registry.load(version.version)
    np.testing.assert_array_equal(
        predictions(again, new, schema), predictions(updated, new, schema)
    )
    # The rows the trees stand for travel with the model, for the next update's share.
    assert getattr(again.steps[-1][1], ROWS_SEEN_ATTRIBUTE) == 3000 + 800


def test_what_a_rule_cannot_do_is_refused_in_one_line_for_the_caller_to_fall_back(old):
    frame, schema, preprocessor = old
    champion = champion_of(old, "sgd_linear", SGD)
    unseen = rows(200, 1).assign(default=lambda f: f["default"].where(f.index > 0, 7))
    with pytest.raises(IncrementalNotSupported) as error:
        update_model(champion, unseen, schema, "sgd_linear", SGD, SEED)
    assert "class '7', which the champion never saw" in str(error.value)
    assert "\n" not in str(error.value)
    assert isinstance(error.value, PipelineInputError)  # the CLI's exit 2, if not caught

    one_class = rows(300, 1).query("default == 0")
    forest = champion_of(old, "random_forest", FOREST)
    with pytest.raises(IncrementalNotSupported, match=r"warm_start: the new rows lack class '1'"):
        update_model(forest, one_class, schema, "random_forest", FOREST, SEED)

    mitigated = ExponentiatedGradientModel(clone(champion.steps[-1][1]), "demographic_parity", 1)
    wrapped = Pipeline([("prep", preprocessor), ("model", mitigated)])
    with pytest.raises(
        IncrementalNotSupported, match=r"exponentiated_gradient wraps the estimator"
    ):
        update_model(wrapped, rows(200, 1), schema, "sgd_linear", SGD, SEED)


def test_a_family_that_is_not_the_champions_is_named(old):
    _, schema, _ = old
    champion = champion_of(old, "sgd_linear", SGD)
    with pytest.raises(PipelineInputError, match=r"'random_forest': the champion's estimator is"):
        update_model(champion, rows(100, 1), schema, "random_forest", FOREST, SEED)


def test_a_threshold_optimized_champion_is_refit_on_the_window_with_its_mitigation(old):
    from components.train.logic import fit_mitigated

    frame, schema, preprocessor = old
    best = {"family": "sgd_linear", "params": SGD}
    champion, _ = fit_mitigated(
        frame,
        schema,
        preprocessor,
        best,
        SEED,
        "threshold_optimizer",
        "demographic_parity",
        "sex",
        {},
        "1",
    )
    window = rows(2000, 1)

    updated, details = update_model(champion, window, schema, "sgd_linear", SGD, SEED)

    assert type(updated) is type(champion) and updated is not champion
    assert details["rule"] == "refit_window"
    assert details["fallback"].startswith("partial_fit: bias mitigation threshold_optimizer")
    assert updated.grouping is champion.grouping and updated.constraint == champion.constraint
    fresh = fit_model(
        window, schema, clone(preprocessor).fit(as_model_input(window, schema)), best, SEED
    )
    np.testing.assert_allclose(
        updated.pipeline.predict_proba(as_model_input(window, schema)),
        fresh.predict_proba(as_model_input(window, schema)),
    )


def test_more_partial_fit_passes_move_the_model_further_toward_the_new_rows():
    # A champion that has seen many rows learns slowly (its learning rate decayed with them):
    # `epochs` passes over the new rows are what moves it.
    from sklearn.linear_model import SGDClassifier

    rng = np.random.default_rng(0)
    old = pd.DataFrame({"x": rng.normal(size=4000)})
    old["y"] = (old["x"] + rng.normal(scale=0.5, size=4000) > 0).astype(int)
    new = pd.DataFrame({"x": rng.normal(size=600)})
    new["y"] = (-new["x"] + rng.normal(scale=0.5, size=600) > 0).astype(int)  # reversed
    schema = {
        "target": "y",
        "task": "classification",
        "classes": ["0", "1"],
        "features": [{"name": "x", "kind": "numeric"}],
    }
    from sklearn.preprocessing import StandardScaler

    champion = Pipeline(
        [("scale", StandardScaler()), ("model", SGDClassifier(loss="log_loss", random_state=0))]
    ).fit(old[["x"]], old["y"])
    coefficients = {}
    for epochs in (1, 10):
        updated, details = update_model(
            champion, new, schema, "sgd_linear", {}, seed=0, epochs=epochs
        )
        assert details["epochs"] == epochs
        coefficients[epochs] = float(updated.steps[-1][1].coef_[0, 0])
    start = float(champion.steps[-1][1].coef_[0, 0])
    assert start > 0 and coefficients[10] < coefficients[1] < start
    with pytest.raises(PipelineInputError, match="retraining.epochs: 0"):
        update_model(champion, new, schema, "sgd_linear", {}, seed=0, epochs=0)
