"""The model server's runtimes: the proven ONNX graph and scikit-learn answer alike.

Versions are registered as the pipeline registers them (export_onnx, check_parity, the register
step's edge_files); the servers are TabularModel objects in process, and one real server on
127.0.0.1 shows the runtime in its start-up line and its V2 metadata.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests

from components.common.errors import PipelineInputError
from components.common.metrics import with_threshold
from components.common.registry import (
    ONNX_FILE,
    PARITY_ROWS_FILE,
    ModelIntegrityError,
    ModelRegistry,
)
from components.common.schema import as_model_input, feature_names
from components.deploy.logic import to_json_rows
from components.export.logic import check_parity, export_onnx
from components.prepare.logic import fit_preprocessor, split_table
from components.register.logic import edge_files
from components.train.logic import fit_model
from components.validate.logic import validate_table
from serving.cli import main
from serving.model import ReloadRefused, TabularModel
from serving.protocol import InvalidInput
from serving.runtime import OnnxAnswers, RuntimeUnavailable, SklearnAnswers
from tests.conftest import make_loans

NAME = "loans"
ROWS = 1000
# Odd tree counts: a forest's probability is never an exact 0.5 tie of votes on these rows.
FAMILIES = {
    "logistic_regression": {"C": 1.0},
    "random_forest": {"n_estimators": 25, "max_depth": 6},
    "hist_gradient_boosting": {"max_iter": 30},
}


@pytest.fixture(scope="module")
def loans():
    frame = make_loans(2 * ROWS + 400, seed=3)
    schema = validate_table(frame, "approved", "classification", ["group"], {})
    train, test = split_table(frame, schema, 0.5, seed=1)
    assert len(test) >= ROWS
    return schema, train, test, fit_preprocessor(train, schema)


def _register(registry: ModelRegistry, model, schema, test, onnx: bytes | None = None):
    """As the pipeline does: export, parity on the test split, register with the edge files.
    `onnx`: register these graph bytes instead of the model's own (parity recorded as passed)."""
    data = export_onnx(model, schema)
    passed = check_parity(model, data, test, schema)["passed"]
    assert passed
    record = {"converted": True, "parity_passed": passed}
    files, onnx_record = edge_files(record, lambda: onnx or data, lambda: test, schema)
    return registry.register(model, {"schema": schema, "onnx": onnx_record}, files).version


def _plain_register(registry: ModelRegistry, model, schema):
    """A version registered before the parity sample existed: no graph, no sample."""
    return registry.register(model, {"schema": schema}).version


@pytest.fixture(scope="module")
def store(tmp_path_factory, loans):
    """family -> version, each with a proven graph; "threshold": a logistic regression with a
    tuned threshold of 0.3."""
    schema, train, test, preprocessor = loans
    registry = ModelRegistry(str(tmp_path_factory.mktemp("runtime") / "store"), NAME)
    versions = {}
    for family, params in FAMILIES.items():
        model = fit_model(train, schema, preprocessor, {"family": family, "params": params}, 0)
        versions[family] = _register(registry, model, schema, test)
    logistic = fit_model(
        train, schema, preprocessor, {"family": "logistic_regression", "params": {}}, 0
    )
    features = as_model_input(train, schema)
    thresholded = with_threshold(logistic, 0.3, "yes", features, train["approved"])
    versions["threshold"] = _register(registry, thresholded, schema, test)
    return registry, versions


def _served(registry: ModelRegistry, version: str, runtime: str) -> TabularModel:
    model = TabularModel(NAME, registry.uri(version), runtime=runtime, max_batch_rows=None)
    model.load()
    return model


def _rows(test: pd.DataFrame, schema: dict, count: int = ROWS) -> list[dict]:
    return to_json_rows(test[feature_names(schema)].iloc[:count])


@pytest.mark.parametrize("kind", [*FAMILIES, "threshold"])
def test_the_same_1000_rows_get_the_same_answers_from_both_runtimes(store, loans, kind):
    registry, versions = store
    schema, _, test, _ = loans
    onnx = _served(registry, versions[kind], "onnx")
    sklearn = _served(registry, versions[kind], "sklearn")
    assert (onnx.answering_runtime.name, sklearn.answering_runtime.name) == ("onnx", "sklearn")
    body = {"instances": _rows(test, schema), "return_probabilities": True}
    fast, slow = onnx.predict(body), sklearn.predict(body)
    assert len(fast["predictions"]) == ROWS
    # Every label identical, of the same type (the model's classes, not the graph's).
    assert fast["predictions"] == slow["predictions"]
    assert {type(p) for p in fast["predictions"]} == {type(p) for p in slow["predictions"]}
    assert fast["classes"] == slow["classes"]
    np.testing.assert_allclose(fast["probabilities"], slow["probabilities"], rtol=0, atol=1e-5)
    # And both are the fitted model's own answers.
    model = sklearn.model
    expected = model.predict(as_model_input(test.iloc[:ROWS], schema))
    assert fast["predictions"] == expected.tolist()


def test_the_tuned_threshold_decides_in_the_onnx_runtime(store, loans):
    """At 0.3, more rows are 'yes' than at 0.5: the graph applies the threshold, not argmax."""
    registry, versions = store
    schema, _, test, _ = loans
    body = {"instances": _rows(test, schema), "return_probabilities": True}
    answer = _served(registry, versions["threshold"], "onnx").predict(body)
    yes = np.asarray(answer["probabilities"])[:, answer["classes"].index("yes")]
    labels = np.asarray(answer["predictions"])
    assert ((yes >= 0.3) & (yes < 0.5)).any()
    assert (labels[yes >= 0.3] == "yes").all() and (labels[yes < 0.3] == "no").all()


def test_v2_answers_are_the_same_on_both_runtimes(store, loans):
    import kserve

    registry, versions = store
    schema, _, test, _ = loans
    rows = test[feature_names(schema)].iloc[:200]
    answers = {}
    for runtime in ("onnx", "sklearn"):
        inputs = []
        for feature in schema["features"]:
            numeric = feature["kind"] == "numeric"
            values = rows[feature["name"]]
            data = [None if pd.isna(v) else (float(v) if numeric else str(v)) for v in values]
            datatype = "FP64" if numeric else "BYTES"
            inputs.append(kserve.InferInput(feature["name"], [len(data)], datatype, data=data))
        request = kserve.InferRequest(
            model_name=NAME,
            infer_inputs=inputs,
            request_id="r1",
            parameters={"return_probabilities": True},
        )
        response = _served(registry, versions["random_forest"], runtime).predict(request)
        answers[runtime] = {o.name: o.as_numpy() for o in response.outputs}
    assert answers["onnx"]["predictions"].tolist() == answers["sklearn"]["predictions"].tolist()
    np.testing.assert_allclose(
        answers["onnx"]["probabilities"], answers["sklearn"]["probabilities"], atol=1e-5
    )


BAD_ROWS = [
    ({"income": "high"}, "instances[0]: feature 'income' must be a number"),
    ({"region": [1]}, "instances[0]: feature 'region' must be a string"),
    ({"nope": 1}, "instances[0]: unknown feature 'nope'"),
]


@pytest.mark.parametrize(("change", "message"), BAD_ROWS)
def test_bad_input_is_refused_alike_on_both_runtimes(store, loans, change, message):
    registry, versions = store
    schema, _, test, _ = loans
    errors = []
    for runtime in ("onnx", "sklearn"):
        row = {**_rows(test, schema, 1)[0], **change}
        with pytest.raises(InvalidInput) as caught:
            _served(registry, versions["logistic_regression"], runtime).predict(
                {"instances": [row]}
            )
        errors.append(str(caught.value))
    assert errors[0] == errors[1] and message in errors[0]


def test_auto_serves_the_proven_graph_and_says_so(store):
    registry, versions = store
    runtime = _served(registry, versions["logistic_regression"], "auto").answering_runtime
    assert runtime.name == "onnx" and runtime.platform == "onnxruntime_onnx"
    assert runtime.reason.startswith(f"parity re-checked on {ROWS} held-out rows")
    assert runtime.parity["passed"] and runtime.parity["rows"] == ROWS


def test_a_version_without_the_parity_sample_is_served_by_scikit_learn(
    tmp_path, store, loans, capsys
):
    registry, versions = store
    schema = loans[0]
    old = ModelRegistry(str(tmp_path / "store"), NAME)
    version = _plain_register(old, registry.load(versions["logistic_regression"])[0], schema)
    runtime = _served(old, version, "auto").answering_runtime
    assert runtime.name == "sklearn" and runtime.reason == f"not ONNX: no {ONNX_FILE}"
    with pytest.raises(RuntimeUnavailable, match=f"--runtime onnx: version {version} has no"):
        _served(old, version, "onnx")
    # The command line: one error line, exit code 2, no server.
    assert main(["--model_dir", old.uri(version), "--runtime", "onnx"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --runtime onnx: version v1 has no ONNX graph") and "\n" not in err


def test_a_graph_that_answers_differently_is_not_served(tmp_path, store, loans):
    """model.onnx of another model: the load-time check catches it, auto falls back to
    scikit-learn naming the first row that differs, onnx refuses the version."""
    registry, versions = store
    schema, _, test, _ = loans
    other = ModelRegistry(str(tmp_path / "store"), NAME)
    forest = registry.load(versions["random_forest"])[0]
    logistic_graph = Path(registry.uri(versions["logistic_regression"])) / ONNX_FILE
    version = _register(other, forest, schema, test, onnx=logistic_graph.read_bytes())
    runtime = _served(other, version, "auto").answering_runtime
    assert runtime.name == "sklearn"
    assert runtime.reason.startswith("not ONNX: ONNX parity failed on ")
    assert "parity rows" in runtime.reason and "first: parity row " in runtime.reason
    with pytest.raises(RuntimeUnavailable, match="ONNX parity failed"):
        _served(other, version, "onnx")


def test_a_changed_parity_sample_refuses_the_version(tmp_path, store, loans):
    registry, versions = store
    schema, _, test, _ = loans
    copy = ModelRegistry(str(tmp_path / "store"), NAME)
    version = _register(copy, registry.load(versions["logistic_regression"])[0], schema, test)
    (Path(copy.uri(version)) / PARITY_ROWS_FILE).write_bytes(b"not the sample")
    with pytest.raises(ModelIntegrityError, match=PARITY_ROWS_FILE):
        _served(copy, version, "auto")


def test_reload_chooses_the_runtime_of_each_version(tmp_path, store, loans):
    registry, versions = store
    schema, _, test, _ = loans
    model = registry.load(versions["logistic_regression"])[0]
    both = ModelRegistry(str(tmp_path / "store"), NAME)
    proven = _register(both, model, schema, test)
    plain = _plain_register(both, model, schema)
    both.promote(proven)
    following = TabularModel(NAME, registry=both, alias="champion")
    following.load()
    assert following.answering_runtime.name == "onnx"
    both.promote(plain)
    assert following.reload()["changed"]
    assert following.answering_runtime.name == "sklearn"
    # With --runtime onnx, a version without a proven graph is refused; the old one serves on.
    strict = TabularModel(NAME, registry=both, alias=proven, runtime="onnx")
    strict.load()
    strict.alias = plain
    with pytest.raises(ReloadRefused, match="--runtime onnx"):
        strict.reload()
    assert strict.version == proven and strict.answering_runtime.name == "onnx"


def test_undecided_rows_are_answered_by_scikit_learn(store, loans):
    """Rows whose probabilities lie within the tolerance of the decision (here: the threshold
    moved onto a row's own probability) take scikit-learn's label, and only those."""
    registry, versions = store
    schema, _, test, _ = loans
    served = _served(registry, versions["threshold"], "onnx")
    answers: OnnxAnswers = served.answering_runtime.answer
    rows = test[feature_names(schema)].iloc[:50]
    from serving.protocol import arrays_from_columns, columns_from_instances

    arrays = arrays_from_columns(
        columns_from_instances({"instances": to_json_rows(rows)}, schema), schema
    )
    _, probabilities, index = answers.raw(arrays, len(rows))
    column = answers.rule[0]
    # A threshold exactly on row 7's probability, and one just above 2 * atol away.
    undecided = answers.undecided(probabilities, index)
    assert not undecided.any()
    answers.rule = (column, float(probabilities[7, column]), *answers.rule[2:])
    undecided = answers.undecided(probabilities, index)
    assert undecided[7] and undecided.sum() == 1

    calls = []
    sklearn = answers.sklearn

    def recording(subset, count, with_probabilities):
        calls.append(count)
        return sklearn(subset, count, with_probabilities)

    answers.sklearn = recording
    predictions, _ = answers(arrays, len(rows), True)
    assert calls == [1]  # one call, for the one undecided row
    expected = served.model.predict(as_model_input(rows, schema))
    assert predictions.tolist() == expected.tolist()


def test_graph_labels_map_to_the_models_classes():
    """Integer classes come back as the model's integers, unknown labels as -1 (undecided)."""
    answers = OnnxAnswers.__new__(OnnxAnswers)
    answers.classes = np.array([3, 7, 11])
    answers._numeric = True
    answers._order = np.argsort(answers.classes)
    answers._sorted_keys = answers.classes[answers._order]
    assert answers._class_index(np.array([11, 3, 5, 7])).tolist() == [2, 0, -1, 1]
    answers.classes = np.array(["b", "a"], dtype=object)
    answers._numeric = False
    keys = OnnxAnswers._text(answers.classes)
    answers._order = np.argsort(keys)
    answers._sorted_keys = keys[answers._order]
    labels = np.array(["a", "c", "b"], dtype=object)
    assert answers._class_index(labels).tolist() == [1, -1, 0]


def test_regression_is_served_by_the_graph_where_it_gives_float64_values(tmp_path):
    """A linear model's graph gives scikit-learn's values to round-off: auto serves it. A
    forest's computes in float32 (about 1e-7 relative): auto keeps scikit-learn's values, and
    says so; --runtime onnx serves the graph, within the parity tolerance."""
    frame = make_loans(600, seed=5)
    schema = validate_table(frame, "age", "regression", ["group"], {})
    train, test = split_table(frame, schema, 0.5, seed=1)
    preprocessor = fit_preprocessor(train, schema)
    registry = ModelRegistry(str(tmp_path / "store"), NAME)
    rows = {"instances": to_json_rows(test[feature_names(schema)])}
    for family, params, auto in (
        ("linear_regression", {"alpha": 1.0}, "onnx"),
        ("random_forest", {"n_estimators": 15, "max_depth": 5}, "sklearn"),
    ):
        model = fit_model(train, schema, preprocessor, {"family": family, "params": params}, 0)
        version = _register(registry, model, schema, test)
        runtime = _served(registry, version, "auto").answering_runtime
        assert runtime.name == auto, runtime.reason
        expected = model.predict(as_model_input(test, schema))
        onnx = _served(registry, version, "onnx")
        assert onnx.answering_runtime.name == "onnx"
        served = np.asarray(onnx.predict(rows)["predictions"])
        np.testing.assert_allclose(served, expected, rtol=1e-5)
        if auto == "sklearn":
            assert "differ from scikit-learn's by up to" in runtime.reason
            assert np.abs(served - expected).max() > 0


def test_an_unknown_runtime_is_refused():
    with pytest.raises(
        PipelineInputError, match=r"--runtime \(or MLPIPE_RUNTIME\) 'fast': expected one of auto"
    ):
        TabularModel(NAME, "/nowhere", runtime="fast")


@pytest.mark.server
def test_the_server_says_which_runtime_answers(store):
    from tests.serving.test_server_features import NAME as SERVED_NAME
    from tests.serving.test_server_features import Server

    registry, versions = store
    folder = registry.uri(versions["random_forest"])
    with Server("--model_dir", folder, "--model_name", SERVED_NAME) as server:
        http = requests.Session()
        http.trust_env = False
        metadata = http.get(f"{server.url}/v2/models/{SERVED_NAME}", timeout=10).json()
        assert metadata["platform"] == "onnxruntime_onnx"
        log = server.log()
    assert f"serving {SERVED_NAME} {versions['random_forest']} at " in log
    assert "; runtime onnx (parity re-checked on 1000 held-out rows" in log


def test_sklearn_answers_without_probabilities_call_predict_only(loans):
    schema, train, test, preprocessor = loans
    model = fit_model(
        train, schema, preprocessor, {"family": "logistic_regression", "params": {}}, 0
    )
    from serving.model import both_answers
    from serving.protocol import arrays_from_columns, columns_from_instances

    answers = SklearnAnswers(model, schema, lambda: both_answers(model))
    rows = test[feature_names(schema)].iloc[:20]
    arrays = arrays_from_columns(
        columns_from_instances({"instances": to_json_rows(rows)}, schema), schema
    )
    predictions, probabilities = answers(arrays, 20, False)
    assert probabilities is None
    assert predictions.tolist() == model.predict(as_model_input(rows, schema)).tolist()


def test_a_large_request_runs_on_the_parallel_session_with_the_same_answers(
    store, loans, monkeypatch
):
    """PARALLEL_ROWS rows or more go to the session on every core, fewer to the one-thread
    session; both give the same labels, and probabilities within float32 rounding."""
    import serving.runtime
    from serving.protocol import arrays_from_columns, columns_from_instances
    from serving.runtime import PARALLEL_ROWS

    monkeypatch.setattr(serving.runtime, "thread_count", lambda: 2)  # whatever this machine has

    registry, versions = store
    schema, _, test, _ = loans
    answers: OnnxAnswers = _served(
        registry, versions["random_forest"], "onnx"
    ).answering_runtime.answer
    assert answers.parallel_graph is not None and answers.parallel_graph is not answers.graph
    rows = test[feature_names(schema)].iloc[:PARALLEL_ROWS]
    arrays = arrays_from_columns(
        columns_from_instances({"instances": to_json_rows(rows)}, schema), schema
    )
    ran = []
    for graph in answers.graphs():
        run = graph.run
        graph.run = lambda columns, count, run=run, graph=graph: (
            ran.append(graph) or run(columns, count)
        )
    answers(arrays, PARALLEL_ROWS, True)
    one = {name: values[:1] for name, values in arrays.items()}
    answers(one, 1, True)
    assert ran == [answers.parallel_graph, answers.graph]
    labels, probabilities, _ = answers.raw(arrays, PARALLEL_ROWS, answers.graph)
    parallel_labels, parallel_probabilities, _ = answers.raw(
        arrays, PARALLEL_ROWS, answers.parallel_graph
    )
    assert labels.tolist() == parallel_labels.tolist()
    np.testing.assert_allclose(probabilities, parallel_probabilities, atol=1e-6)


def test_the_load_time_parity_check_covers_the_parallel_session(store, loans, monkeypatch):
    """A parallel session that answered differently would fail the version's parity check."""
    import io

    import serving.runtime

    monkeypatch.setattr(serving.runtime, "thread_count", lambda: 2)  # whatever this machine has

    from components.common.registry import PARITY_ROWS_FILE, read_verified
    from serving.runtime import parity_on_rows

    registry, versions = store
    schema = loans[0]
    answers: OnnxAnswers = _served(
        registry, versions["random_forest"], "onnx"
    ).answering_runtime.answer
    folder = registry.uri(versions["random_forest"])
    metadata = json.loads((Path(folder) / "metadata.json").read_text())
    sample = pd.read_parquet(
        io.BytesIO(read_verified(folder, metadata, only=(PARITY_ROWS_FILE,))[PARITY_ROWS_FILE])
    )
    assert parity_on_rows(answers, answers.sklearn, sample, schema)["passed"]
    run = answers.parallel_graph.run

    def shifted(columns, count):
        labels, probabilities = run(columns, count)
        return labels, np.asarray(probabilities) + 1e-3  # off by more than the tolerance

    answers.parallel_graph.run = shifted
    result = parity_on_rows(answers, answers.sklearn, sample, schema)
    assert not result["passed"] and result["max_abs_diff"] >= 1e-3


def test_with_one_core_there_is_no_parallel_session(store, monkeypatch):
    """A pod limited to one CPU gets no second session: every request runs on one thread."""
    import serving.runtime

    registry, versions = store
    monkeypatch.setattr(serving.runtime, "thread_count", lambda: 1)
    answers = _served(registry, versions["random_forest"], "onnx").answering_runtime.answer
    assert answers.parallel_graph is None and answers.graphs() == [answers.graph]
