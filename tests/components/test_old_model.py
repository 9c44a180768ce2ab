"""A model version registered before the shared classes moved into components.common still loads
through the registry and predicts what it predicted then (tests/data/model_before_layering)."""

import json
import shutil
from pathlib import Path

import pandas as pd

from components.common.registry import ModelRegistry
from components.common.schema import as_model_input

OLD = Path(__file__).resolve().parents[1] / "data" / "model_before_layering"


def test_a_model_registered_before_the_layering_loads_and_predicts_as_it_did(tmp_path):
    store = tmp_path / "store"
    shutil.copytree(OLD / "old-layout", store / "old-layout")
    pickle_text = (store / "old-layout" / "v1" / "model.joblib").read_bytes()
    # The pickle names the old module paths, which is what this test is about.
    assert b"components.prepare.transformers" in pickle_text
    assert b"components.bias.mitigation" in pickle_text

    model, metadata = ModelRegistry(str(store), "old-layout").load("v1")

    schema = json.loads((OLD / "schema.json").read_text())
    rows = pd.read_json(OLD / "rows.json", orient="records", convert_dates=False)
    predicted = model.predict(as_model_input(rows, schema))
    assert [str(v) for v in predicted] == json.loads((OLD / "expected.json").read_text())
    assert metadata["version"] == "v1"
