"""A synthetic tabular data set at any size, for scale tests: a Hive-partitioned Parquet lake.

Each row is a loan applicant: skewed numbers with outliers, categories of low, high and rare
cardinality, two sensitive attributes (`sex`, `age`), 2-5 % missing values in most feature
columns, and a binary target `default` that depends on several features (and a little on `sex`,
so that bias analysis has something to find). The lake is partitioned by `region`
(`region=r00/`, ...), one Parquet file per partition with one row group per chunk.

Rows are made in chunks of `chunk_rows`, each from its own random generator seeded by
(seed, chunk number), so 10 million rows never sit in memory at once, the same arguments give
byte-identical values, and a smaller run with the same seed and chunk size is a prefix of a
larger one (chunk by chunk).
"""

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from components.common.errors import PipelineInputError

TARGET = "default"
SENSITIVE = ("sex", "age")
PARTITION = "region"
MISSING_RATE = 0.03
OUTLIER_RATE = 0.002
# Categorical columns: values and their probabilities (None: uniform).
EMPLOYMENT = (["salaried", "self-employed", "unemployed", "retired", "student"], None)
EDUCATION = (["primary", "secondary", "vocational", "bachelor", "master", "doctorate"], None)
CHANNEL = (["branch", "online", "broker"], [0.3, 0.6, 0.1])
# Rare categories: the last three products and two devices appear in under 0.5 % of rows.
PRODUCT = (
    [f"p{i:02d}" for i in range(12)],
    [0.2, 0.15, 0.15, 0.1, 0.1, 0.1, 0.08, 0.06, 0.054, 0.003, 0.002, 0.001],
)
DEVICE = (
    ["android", "ios", "desktop", "tablet", "tv", "kiosk", "watch", "unknown"],
    [0.35, 0.3, 0.2, 0.1, 0.041, 0.005, 0.003, 0.001],
)
MARITAL = (["single", "married", "divorced", "widowed"], [0.4, 0.45, 0.1, 0.05])
SEX = (["female", "male", "other"], [0.49, 0.49, 0.02])
# High cardinality: a postcode from a Zipf-like distribution over this many values.
POSTCODES = 1000
COLUMNS = (
    "age",
    "sex",
    "income",
    "debt",
    "credit_score",
    "tenure_months",
    "num_accounts",
    "balance",
    "utilization",
    "late_payments",
    "transaction_amount",
    "savings_rate",
    "employment",
    "education",
    "channel",
    "product",
    "postcode",
    "device",
    "marital_status",
    TARGET,
)
# Columns that keep every value: the target, and what the row's identity rests on.
COMPLETE = {TARGET, "sex", "tenure_months"}


def _choice(rng: np.random.Generator, values_and_p, rows: int) -> pa.Array:
    values, p = values_and_p
    codes = rng.choice(len(values), size=rows, p=p)
    return pc.take(pa.array(values), pa.array(codes))


def _chunk(seed: int, number: int, rows: int, regions: list[str]) -> tuple[pa.Table, np.ndarray]:
    """One chunk of rows, and each row's partition (an index into `regions`)."""
    rng = np.random.default_rng([seed, number])
    region = rng.integers(0, len(regions), rows)
    age = np.clip(rng.normal(42, 14, rows), 18, 95).round()
    sex = rng.choice(3, size=rows, p=SEX[1])
    income = rng.lognormal(10.6, 0.55, rows)  # skewed to the right
    outliers = rng.random(rows) < OUTLIER_RATE
    income[outliers] *= rng.uniform(20, 100, outliers.sum())  # a few absurd incomes
    debt = rng.gamma(2.0, 6000, rows)
    credit = np.clip(rng.normal(660, 80, rows), 300, 850).round()
    tenure = rng.poisson(48, rows)
    accounts = rng.poisson(3, rows) + 1
    balance = rng.normal(4000, 2500, rows)
    flipped = rng.random(rows) < OUTLIER_RATE
    balance[flipped] = rng.normal(-50_000, 10_000, flipped.sum())  # data-entry errors
    utilization = rng.beta(2, 5, rows)
    late = rng.poisson(0.6, rows)
    amount = (rng.pareto(2.5, rows) + 1) * 40  # heavy tail
    savings = rng.normal(0.08, 0.05, rows)
    employment = rng.integers(0, len(EMPLOYMENT[0]), rows)
    # Postcodes: rank r has weight 1/r (Zipf-like), so a few are common and most are rare.
    weights = 1 / np.arange(1, POSTCODES + 1)
    postcode = rng.choice(POSTCODES, size=rows, p=weights / weights.sum())

    score = (
        -2.2
        + 1.1 * (debt / income)
        - 0.006 * (credit - 660)
        + 0.45 * late
        + 1.5 * (utilization - 0.3)
        + np.select([employment == 2, employment == 4], [0.9, 0.4], 0.0)
        + np.where(sex == 1, 0.15, 0.0)
        - 0.01 * (age - 42)
    )
    target = (rng.random(rows) < 1 / (1 + np.exp(-score))).astype(np.int64)

    columns = {
        "age": pa.array(age),
        "sex": pc.take(pa.array(SEX[0]), pa.array(sex)),
        "income": pa.array(income.round(2)),
        "debt": pa.array(debt.round(2)),
        "credit_score": pa.array(credit),
        "tenure_months": pa.array(tenure.astype(np.int64)),
        "num_accounts": pa.array(accounts.astype(np.int64)),
        "balance": pa.array(balance.round(2)),
        "utilization": pa.array(utilization),
        "late_payments": pa.array(late.astype(np.int64)),
        "transaction_amount": pa.array(amount.round(2)),
        "savings_rate": pa.array(savings),
        "employment": pc.take(pa.array(EMPLOYMENT[0]), pa.array(employment)),
        "education": _choice(rng, EDUCATION, rows),
        "channel": _choice(rng, CHANNEL, rows),
        "product": _choice(rng, PRODUCT, rows),
        "postcode": pc.take(pa.array([f"PC{i:04d}" for i in range(POSTCODES)]), pa.array(postcode)),
        "device": _choice(rng, DEVICE, rows),
        "marital_status": _choice(rng, MARITAL, rows),
        TARGET: pa.array(target),
    }
    for name in COLUMNS:
        if name in COMPLETE:
            continue
        # Each column draws its own missing rows; the rate varies a little by column (2-5 %).
        rate = MISSING_RATE + 0.01 * ((COLUMNS.index(name) % 3) - 1)
        missing = pa.array(rng.random(rows) < rate)
        columns[name] = pc.if_else(missing, pa.scalar(None, columns[name].type), columns[name])
    return pa.table(columns), region


def generate(
    rows: int,
    path: str | Path,
    seed: int = 0,
    partitions: int = 8,
    chunk_rows: int = 500_000,
) -> dict:
    """Write `rows` synthetic rows as a Hive-partitioned Parquet lake at `path`.

    The lake is written into a temporary folder beside `path` and renamed into place, so an
    interrupted run leaves nothing behind.

    Args:
        rows: how many rows in all.
        path: the lake's folder; it must not exist yet (or be empty).
        seed: the random seed; the same arguments give the same values.
        partitions: how many `region=` partitions (at most 100).
        chunk_rows: rows made and written at a time (memory grows with it, not with `rows`).

    Returns:
        What was written: path, rows, partitions, files, columns, target, sensitive columns.

    Raises:
        PipelineInputError: bad arguments, or `path` already holds something.
    """
    if rows < 1 or chunk_rows < 1 or not 1 <= partitions <= 100:
        raise PipelineInputError(
            f"generate: rows ({rows}) and chunk_rows ({chunk_rows}) must be positive, "
            f"partitions ({partitions}) between 1 and 100"
        )
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise PipelineInputError(f"generate: '{path}' already exists and is not empty")
    regions = [f"r{i:02d}" for i in range(partitions)]
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    writers: dict[int, pq.ParquetWriter] = {}
    try:
        for number, start in enumerate(range(0, rows, chunk_rows)):
            table, region = _chunk(seed, number, min(chunk_rows, rows - start), regions)
            order = np.argsort(region, kind="stable")
            bounds = np.searchsorted(region[order], np.arange(partitions + 1))
            for index in range(partitions):
                take = order[bounds[index] : bounds[index + 1]]
                if not len(take):
                    continue
                if index not in writers:
                    folder = staging / f"{PARTITION}={regions[index]}"
                    folder.mkdir()
                    writers[index] = pq.ParquetWriter(folder / "part-0.parquet", table.schema)
                writers[index].write_table(table.take(pa.array(take)))
        for writer in writers.values():
            writer.close()
        writers.clear()
        if path.exists():
            path.rmdir()
        staging.rename(path)
    finally:
        for writer in writers.values():
            writer.close()
        if staging.exists():
            shutil.rmtree(staging)
    return {
        "path": str(path),
        "rows": rows,
        "seed": seed,
        "partitions": partitions,
        "files": sorted(str(p.relative_to(path)) for p in path.rglob("*.parquet")),
        "columns": [*COLUMNS, PARTITION],
        "target": TARGET,
        "sensitive": list(SENSITIVE),
    }
