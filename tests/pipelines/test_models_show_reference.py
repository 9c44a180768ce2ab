"""`mlpipe models show`: the version's training reference as a person reads it (rows, features,
each held-out metric with its interval, the prediction distribution, the file's size), within
80 columns, while stdout stays the metadata's JSON."""

import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console
from sklearn.linear_model import LinearRegression, LogisticRegression

from components.common.reference import build_reference, reference_json
from components.common.registry import REFERENCE_FILE, ModelRegistry
from pipelines import models_cli
from pipelines.cli import main
from tests.components.test_reference import LOANS_SCHEMA, fitted, loans_split

NAME = "loans"
WIDTHS = (80, 100, 120)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """v1 from before references; v2 with a classification reference; v3 whose reference
    failed to build; v4 with a regression reference."""
    store = str(tmp_path_factory.mktemp("models"))
    registry = ModelRegistry(store, NAME)
    train, test = loans_split(400)
    model = fitted(train, LOANS_SCHEMA, LogisticRegression(max_iter=1000))
    registry.register(model, {"metrics": {"roc_auc": 0.7}})
    data = reference_json(build_reference(train, test, LOANS_SCHEMA, model, "yes"))
    registry.register(
        model, {"reference": {"stored": True, "bytes": len(data)}}, {REFERENCE_FILE: data}
    )
    failed = {"stored": False, "reason": "building it failed (RuntimeError: exploded)"}
    registry.register(model, {"reference": failed})
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=200)})
    frame["y"] = 2 * frame["x"] + 10
    schema = {"target": "y", "task": "regression", "features": [{"name": "x", "kind": "numeric"}]}
    regressor = fitted(frame, schema, LinearRegression())
    reference = build_reference(frame.iloc[:150], frame.iloc[150:], schema, regressor)
    registry.register(regressor, {}, {REFERENCE_FILE: reference_json(reference)})
    return store


def show(monkeypatch, width: int, store: str, version: str) -> tuple[str, str]:
    """(stdout, stderr) of `mlpipe models show VERSION` on consoles `width` columns wide."""
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(models_cli, "console", Console(width=width, file=out, soft_wrap=True))
    monkeypatch.setattr(
        models_cli, "summary_console", Console(width=width, file=err, soft_wrap=True)
    )
    assert main(["models", "show", version, "--store", store, "--name", NAME]) == 0
    return out.getvalue(), err.getvalue()


@pytest.mark.parametrize("width", WIDTHS)
def test_show_summarises_the_reference_within_the_width(monkeypatch, store, width):
    out, err = show(monkeypatch, width, store, "v2")
    assert json.loads(out)["version"] == "v2"  # stdout is still the metadata, for jq
    reference = ModelRegistry(store, NAME).reference("v2")
    assert "training reference of loans v2" in err
    assert "300 train, 100 test" in err
    assert "2 numeric, 2 categorical" in err
    for name, metric in reference["metrics"].items():
        line = next((line for line in err.splitlines() if re.search(rf"\b{name}\b", line)), "")
        assert f"{metric['value']:.4f}" in line, f"{name}:\n{err}"
        assert f"{metric['low']:.4f} to {metric['high']:.4f}" in line, f"{name}:\n{err}"
    shares = reference["profile"]["outputs"]["prediction"]["shares"]
    for label, share in shares.items():
        assert f"{label} {100 * share:.1f}%" in err
    kilobytes = (Path(ModelRegistry(store, NAME).uri("v2")) / REFERENCE_FILE).stat().st_size / 1024
    assert f"reference.json, {kilobytes:.1f} KB" in err
    for line in err.splitlines():  # (the JSON's checksums are one long string each)
        assert len(line) <= width, f"wider than {width}: {line!r}"


def test_an_old_version_says_it_has_no_reference(monkeypatch, store):
    _, err = show(monkeypatch, 80, store, "v1")
    assert err.splitlines() == [
        "training reference of loans v1",
        "no reference (registered before references were stored)",
    ]


def test_a_version_whose_reference_failed_says_why(monkeypatch, store):
    _, err = show(monkeypatch, 80, store, "v3")
    # A long reason wraps; every word of it is there.
    said = " ".join(err.split())
    assert "no reference (building it failed (RuntimeError: exploded))" in said


def test_a_regression_reference_shows_prediction_quantiles(monkeypatch, store):
    _, err = show(monkeypatch, 80, store, "v4")
    assert re.search(r"predictions\s+min [\d.]+, p10 [\d.]+, median [\d.]+, p90 [\d.]+, max", err)
    assert re.search(r"\br2\b", err) and "0 numeric" not in err and "1 numeric" in err


def test_a_changed_reference_is_refused_in_one_line(tmp_path, capsys):
    store = str(tmp_path)
    registry = ModelRegistry(store, NAME)
    train, test = loans_split(400)
    model = fitted(train, LOANS_SCHEMA, LogisticRegression(max_iter=1000))
    data = reference_json(build_reference(train, test, LOANS_SCHEMA, model, "yes"))
    version = registry.register(model, {}, {REFERENCE_FILE: data})
    (Path(version.uri) / REFERENCE_FILE).write_bytes(data.replace(b'"rows"', b'"Rows"', 1))
    assert main(["models", "show", "v1", "--store", store, "--name", NAME]) == 2
    err = capsys.readouterr().err.strip()
    assert "reference.json: SHA-256" in err and "refusing" in err and "\n" not in err
