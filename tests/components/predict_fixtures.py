"""A small registered model for the batch-prediction tests: a logistic regression on the loans
table, registered with its ONNX graph (parity checked as the export step checks it), and a
Parquet lake of loans to score."""

from pathlib import Path

import numpy as np
import pandas as pd

from components.common.registry import ONNX_FILE, ModelRegistry
from components.export.logic import check_parity, export_onnx
from components.prepare.logic import fit_preprocessor, split_table
from components.train.logic import fit_model
from components.validate.logic import validate_table
from tests.conftest import make_loans

MODEL = "loans"
TARGET = "approved"


def register_loans_model(
    store: Path, onnx: bool = True, promote: bool = True
) -> tuple[ModelRegistry, object, dict]:
    """The next version of `loans` in `store` (the champion, with promote): (registry, the
    fitted model, its schema)."""
    frame = make_loans(600, seed=0)
    schema = validate_table(frame, TARGET, "classification", ["group"], {})
    train, test = split_table(frame, schema, 0.25, seed=1)
    model = fit_model(
        train,
        schema,
        fit_preprocessor(train, schema),
        {"family": "logistic_regression", "params": {"C": 1.0}},
        0,
    )
    extra, record = {}, {"converted": False, "reason": "not asked"}
    if onnx:
        data = export_onnx(model, schema)
        parity = check_parity(model, data, test, schema)
        extra = {ONNX_FILE: data}
        record = {"converted": True, "parity_passed": parity["passed"]}
    registry = ModelRegistry(str(store), MODEL)
    version = registry.register(model, {"schema": schema, "onnx": record}, extra)
    if promote:
        registry.promote(version.version)
    return registry, model, schema


def loans_to_score(rows: int, seed: int = 3) -> pd.DataFrame:
    """New loan applications: the features, an id, and a month (the lake's partition)."""
    frame = make_loans(rows, seed=seed).drop(columns=[TARGET])
    frame.insert(0, "loan_id", np.arange(rows, dtype=np.int64) + 1000)
    frame["month"] = np.where(np.arange(rows) < rows // 2, "2026-10", "2026-11")
    return frame


def write_lake(frame: pd.DataFrame, lake: Path) -> Path:
    """A Hive-partitioned lake (month=.../part-0.parquet), as a scheduled job reads it."""
    for month, part in frame.groupby("month"):
        folder = lake / f"month={month}"
        folder.mkdir(parents=True, exist_ok=True)
        part.drop(columns=["month"]).to_parquet(folder / "part-0.parquet", index=False)
    return lake
