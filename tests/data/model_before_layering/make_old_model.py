"""Made once, at commit 8c997a5 (before the layering moved classes into components.common):
a small model version whose pickle names components.prepare.transformers and
components.bias.mitigation classes."""

import json
import sys
from pathlib import Path

from components.prepare.logic import as_model_input, fit_preprocessor, split_table
from components.register.registry import ModelRegistry
from components.train.logic import fit_mitigated
from components.validate.logic import validate_table
from tests.components.test_prepare_options import make_table

out = Path(sys.argv[1])
frame = make_table(rows=160, seed=5)
schema = validate_table(frame, "approved", "classification", ["group"], {})
train, test = split_table(frame, schema, 0.25, seed=3)
options = {
    "derived": [
        {"name": "debt_ratio", "ratio": ["debt", "income"]},
        {"name": "age_band", "bins": {"column": "age", "edges": [0, 30, 50, 120]}},
    ],
    "log_transform": ["income"],
    "outliers": {"method": "iqr", "action": "clip"},
}
pre = fit_preprocessor(train, schema, options)
best = {"family": "logistic_regression", "params": {"C": 1.0}}
model, *_ = fit_mitigated(
    train, schema, pre, best, 0, "exponentiated_gradient", "demographic_parity", "group", {}, ""
)
reg = ModelRegistry(str(out), "old-layout")
reg.register(model, {"schema": schema, "note": "made at commit 8c997a5, before the layering"})
rows = test.head(20)
expected = model.predict(as_model_input(rows, schema))
rows.to_json(out / "rows.json", orient="records", date_format="iso")
(out / "expected.json").write_text(json.dumps([str(v) for v in expected]))
(out / "schema.json").write_text(json.dumps(schema))
print(type(model), sorted(p.name for p in (out / "old-layout" / "v1").iterdir()))
