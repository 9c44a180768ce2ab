"""`mlpipe feedback` through the CLI's main: labels for logged predictions appended, or refused
with one line and exit 2, against a tiny registry and a prediction log written by PredictionLog.
"""

import pytest
from sklearn.dummy import DummyClassifier

from components.common.labels import read_labels
from components.common.prediction_log import PredictionLog
from components.common.registry import ModelRegistry
from pipelines.cli import main
from tests.conftest import write_config

NAME = "arrests-release"


@pytest.fixture
def setup(tmp_path):
    """A config whose store holds v1 (classes "No", "Yes") and whose log holds request "one"
    (one row) and "two" (two rows), both answered by v1."""
    config = write_config(
        tmp_path / "run.yaml",
        model_name=NAME,
        output_root=str(tmp_path / "out"),
    )
    store = tmp_path / "out" / "models"
    model = DummyClassifier().fit([[0], [1]], ["No", "Yes"])
    schema = {"task": "classification", "classes": ["No", "Yes"], "features": []}
    ModelRegistry(str(store), NAME).register(model, {"schema": schema})
    with PredictionLog(str(tmp_path / "out" / "predictions"), NAME) as log:
        log.record("one", "v1", {"age": [30]}, ["No"])
        log.record("two", "v1", {"age": [40, 50]}, ["Yes", "No"])
    return tmp_path, config


def labels_file(folder, text: str):
    path = folder / "labels.csv"
    path.write_text(text)
    return str(path)


def lake(tmp_path):
    frame, skipped = read_labels(str(tmp_path / "out" / "labels"), NAME)
    assert skipped == []
    return sorted(zip(frame["request_id"], frame["row"], frame["label"], strict=True))


def test_valid_labels_are_appended_with_the_class_type_and_exit_0(setup, capsys):
    tmp_path, config = setup
    labels = labels_file(tmp_path, "request_id,row,label\none,,Yes\ntwo,1,No\ntwo,0,yes\n")
    assert main(["feedback", "--config", str(config), "--labels", labels]) == 0
    out = capsys.readouterr().out
    assert "3 labels appended" in out and "labels.csv" in out
    assert lake(tmp_path) == [("one", 0, "Yes"), ("two", 0, "Yes"), ("two", 1, "No")]


def test_an_invalid_pair_refuses_the_file_with_one_line_and_writes_nothing(setup, capsys):
    tmp_path, config = setup
    labels = labels_file(tmp_path, "request_id,label\none,Maybe\nghost,No\ntwo,No\n")
    assert main(["feedback", "--config", str(config), "--labels", labels]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "labels.csv" in err
    assert "not one of the model's classes: 1 (e.g. one)" in err
    assert "unknown request id: 1 (e.g. ghost)" in err
    assert "no row, and the request had several: 1 (e.g. two)" in err
    assert "nothing written" in err
    assert not (tmp_path / "out" / "labels").exists()


def test_skip_invalid_appends_the_valid_pairs_and_still_exits_2(setup, capsys):
    tmp_path, config = setup
    labels = labels_file(tmp_path, "request_id,row,label\none,0,Yes\ntwo,7,No\n")
    code = main(["feedback", "--config", str(config), "--labels", labels, "--skip-invalid"])
    assert code == 2
    captured = capsys.readouterr()
    assert "appended 1 of 2 labels" in captured.out
    assert "unknown row: 1 (e.g. two#7)" in captured.err
    assert lake(tmp_path) == [("one", 0, "Yes")]


def test_the_same_file_twice_is_refused_as_already_labelled(setup, capsys):
    tmp_path, config = setup
    labels = labels_file(tmp_path, "request_id,label\none,No\n")
    assert main(["feedback", "--config", str(config), "--labels", labels]) == 0
    assert main(["feedback", "--config", str(config), "--labels", labels]) == 2
    assert "already labelled: 1 (e.g. one)" in capsys.readouterr().err
    assert lake(tmp_path) == [("one", 0, "No")]


def test_a_labels_file_without_the_label_column_is_named(setup, capsys):
    tmp_path, config = setup
    labels = labels_file(tmp_path, "request_id,outcome\none,No\n")
    assert main(["feedback", "--config", str(config), "--labels", labels]) == 2
    err = capsys.readouterr().err
    assert "labels.csv: no column 'label'" in err and "found: request_id, outcome" in err
