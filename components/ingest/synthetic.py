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

For drift benchmarks a lake (or one in-memory table, `make_table`) can also carry a known change:

- `shifts`: {feature: target PSI}. A numeric feature's present values move up by the amount whose
  PSI over the reference deciles (components.common.profile's bins, drift's PSI) is the target; a
  categorical feature's most frequent category gives rows to its least frequent one of at least
  5 % share, as many as make that PSI. The amount is solved once on CALIBRATION_ROWS unshifted
  rows, so every window with the same target moves by the same amount.
- `relation="changed"`: the same features, another P(default | features) (every feature's effect
  reversed): a label-relation (concept) change.

Without them the rows are exactly the default ones; the changes draw from a generator of their
own, so the features a shift leaves alone stay byte-identical.
"""

import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from components.common.drift import numeric_psi, psi
from components.common.errors import PipelineInputError
from components.common.profile import numeric_profile

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
# The table's features as a lake reader sees them (the partition column included), and which of
# them are numbers; the others are text, read as categories.
FEATURES = tuple(name for name in COLUMNS if name != TARGET) + (PARTITION,)
NUMERIC_FEATURES = frozenset(
    {
        "age",
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
    }
)
# Columns that keep every value: the target, and what the row's identity rests on.
COMPLETE = {TARGET, "sex", "tenure_months"}
# P(default | features): the reference relation, and the changed one of a concept-drift window.
RELATIONS = ("reference", "changed")
# The changed relation mirrors the label's score about this (default rate 27 % against 25 %).
CHANGED_CENTRE = -1.2
# The features the label's score reads: a shift of one moves it before the label is drawn.
SCORE_FEATURES = {
    "income",
    "debt",
    "credit_score",
    "utilization",
    "late_payments",
    "age",
    "employment",
    "sex",
}
# Unshifted rows that a shift's size is solved on, and their seed (fixed: every lake and window
# with the same target PSI gets the same shift).
CALIBRATION_ROWS = 200_000
CALIBRATION_SEED = 20_251_203
# A categorical shift moves rows into the least frequent category with at least this share (a
# rarer one would need a tiny, noisy move).
MIN_RECEIVING_SHARE = 0.05
# How far above the target a solved shift's PSI may land (a discrete feature moves in steps).
PSI_TOLERANCE = 0.1


def feature_schema(classes: tuple[str, ...] = ("0", "1")) -> dict:
    """The schema that validate would write for the table (its labels as text), for profiling and
    comparing synthetic tables without running the pipeline."""
    return {
        "task": "classification",
        "target": TARGET,
        "classes": list(classes),
        "features": [
            {"name": name, "kind": "numeric" if name in NUMERIC_FEATURES else "categorical"}
            for name in FEATURES
        ],
    }


def _choice(rng: np.random.Generator, values_and_p, rows: int) -> pa.Array:
    values, p = values_and_p
    codes = rng.choice(len(values), size=rows, p=p)
    return pc.take(pa.array(values), pa.array(codes))


def _chunk(
    seed: int,
    number: int,
    rows: int,
    regions: list[str],
    shifts: dict[str, float] | None = None,
    relation: str = "reference",
) -> tuple[pa.Table, np.ndarray]:
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

    shift_rng = np.random.default_rng([seed, number, 1])
    if shifts:
        # Shifted before the label is drawn, so that the label follows the shifted values: a
        # covariate shift, P(default | features) unchanged. The columns outside the label's
        # score are shifted below, after the missing values.
        raw = {
            "income": income,
            "debt": debt,
            "credit_score": credit,
            "utilization": utilization,
            "late_payments": late,
            "age": age,
        }
        for name in sorted(set(shifts) & set(raw)):
            raw[name] += shift_for_psi(name, float(shifts[name]))["offset"]
        if "employment" in shifts:
            employment = _shifted_codes(
                employment,
                EMPLOYMENT[0],
                shift_for_psi("employment", shifts["employment"]),
                shift_rng,
            )
        if "sex" in shifts:
            sex = _shifted_codes(sex, SEX[0], shift_for_psi("sex", shifts["sex"]), shift_rng)
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
    if relation == "changed":
        # The same features and the same draw below; only what they mean for the label moves:
        # every effect reversed, mirrored about CHANGED_CENTRE so the default rate stays near
        # the reference's quarter.
        score = 2 * CHANGED_CENTRE - score
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
    for name, target_psi in sorted((shifts or {}).items()):
        if name not in SCORE_FEATURES:
            columns[name] = _shifted(columns[name], name, target_psi, shift_rng)
    return pa.table(columns), region


def _check_changes(shifts: dict[str, float] | None, relation: str) -> None:
    if relation not in RELATIONS:
        raise PipelineInputError(f"relation: '{relation}' is not one of {', '.join(RELATIONS)}")
    for name, target_psi in (shifts or {}).items():
        if name not in COLUMNS or name == TARGET:
            raise PipelineInputError(f"shifts: '{name}' is not a feature of the synthetic data")
        if not 0 < target_psi <= 2:
            raise PipelineInputError(f"shifts: '{name}': PSI {target_psi} is not in (0, 2]")


@lru_cache(maxsize=1)
def _calibration_table() -> pa.Table:
    return _chunk(CALIBRATION_SEED, 0, CALIBRATION_ROWS, ["r00"])[0]


@lru_cache(maxsize=256)
def shift_for_psi(feature: str, target_psi: float) -> dict:
    """The shift of `feature` whose PSI against its unshifted distribution is `target_psi`.

    Solved by bisection on CALIBRATION_ROWS unshifted rows, over the reference deciles that
    profile_frame cuts (numeric) or the categories' shares (categorical).

    Returns:
        numeric: {"kind": "numeric", "offset": added to every present value, "psi"};
        categorical: {"kind": "categorical", "source", "target": categories, "share": the share
        of all rows moved from source to target, "psi"}.

    Raises:
        PipelineInputError: not a feature, a PSI out of (0, 2], or one the feature cannot reach.
    """
    _check_changes({feature: target_psi}, "reference")
    column = _calibration_table()[feature]
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        counts = pc.value_counts(column.drop_null()).to_pylist()
        shares = {c["values"]: c["counts"] / (len(column) - column.null_count) for c in counts}
        ranked = sorted(shares, key=lambda name: (-shares[name], name))
        source = ranked[0]
        receiving = [name for name in ranked[1:] if shares[name] >= MIN_RECEIVING_SHARE]
        target = receiving[-1] if receiving else ranked[1]
        before = np.array([shares[source], shares[target]])

        def psi_of(moved: float) -> float:
            return psi(before + [-moved, moved], before)

        upper = shares[source]
        solved = _bisect(psi_of, target_psi, upper, feature)
        return {
            "kind": "categorical",
            "source": source,
            "target": target,
            "share": solved,
            "psi": float(psi_of(solved)),
        }
    numbers = column.drop_null().to_numpy(zero_copy_only=False).astype(float)
    reference = numeric_profile(numbers, 10)

    def psi_of(offset: float) -> float:
        return numeric_psi(reference, numbers + offset)

    upper = 10 * float(numbers.max() - numbers.min())
    solved = _bisect(psi_of, target_psi, upper, feature)
    reached = psi_of(solved)
    if reached > target_psi * (1 + PSI_TOLERANCE):
        # Few distinct values (an age in whole years): one more step jumps past the target.
        raise PipelineInputError(
            f"shifts: '{feature}' is too coarse for PSI {target_psi} (the smallest shift "
            f"past it gives {reached:.3f}); shift a finer-grained feature"
        )
    return {"kind": "numeric", "offset": solved, "psi": reached}


def _bisect(function, target: float, upper: float, feature: str) -> float:
    """The smallest x in [0, upper] with function(x) >= target (function grows with x)."""
    if function(upper) < target:
        raise PipelineInputError(
            f"shifts: '{feature}' cannot reach PSI {target} (at most {function(upper):.3f})"
        )
    low, high = 0.0, upper
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if function(middle) < target else (low, middle)
    return float(high)


def _shifted_codes(codes: np.ndarray, names: list[str], shift: dict, rng) -> np.ndarray:
    """Category codes with the categorical `shift` (from shift_for_psi) applied."""
    source, target = names.index(shift["source"]), names.index(shift["target"])
    is_source = codes == source
    move_chance = min(1.0, shift["share"] * len(codes) / max(int(is_source.sum()), 1))
    return np.where(is_source & (rng.random(len(codes)) < move_chance), target, codes)


def _shifted(values: pa.Array, name: str, target_psi: float, rng: np.random.Generator):
    """`values` with the shift of `shift_for_psi(name, target_psi)`; missing values stay."""
    shift = shift_for_psi(name, float(target_psi))
    if shift["kind"] == "numeric":
        return pc.add(values.cast(pa.float64()), pa.scalar(shift["offset"]))
    source_share = pc.sum(pc.equal(values, shift["source"])).as_py() or 0
    present = len(values) - values.null_count
    move_chance = min(1.0, shift["share"] * present / max(source_share, 1))
    moved = pc.and_(
        pc.fill_null(pc.equal(values, shift["source"]), False),
        pa.array(rng.random(len(values)) < move_chance),
    )
    return pc.if_else(moved, pa.scalar(shift["target"]), values)


def make_table(
    rows: int,
    seed: int = 0,
    number: int = 0,
    partitions: int = 8,
    shifts: dict[str, float] | None = None,
    relation: str = "reference",
) -> pa.Table:
    """One chunk of `rows` synthetic rows in memory, its partition as a `region` column.

    The same rows `generate` writes for chunk `number` (before they are split by region).

    Args:
        rows: how many rows.
        seed: the random seed.
        number: the chunk's number (another number: other rows from the same seed).
        partitions: how many regions the rows are spread over.
        shifts: {feature: target PSI} (see the module docstring); None: no shift.
        relation: "reference", or "changed" for another P(default | features).

    Raises:
        PipelineInputError: a shift of a non-feature or an unreachable PSI, an unknown relation.
    """
    _check_changes(shifts, relation)
    regions = [f"r{i:02d}" for i in range(partitions)]
    table, region = _chunk(seed, number, rows, regions, shifts, relation)
    return table.append_column(PARTITION, pc.take(pa.array(regions), pa.array(region)))


def generate(
    rows: int,
    path: str | Path,
    seed: int = 0,
    partitions: int = 8,
    chunk_rows: int = 500_000,
    shifts: dict[str, float] | None = None,
    relation: str = "reference",
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
        shifts: {feature: target PSI}: each feature shifted by that much (module docstring);
            None: no shift.
        relation: "reference", or "changed" for another P(default | features).

    Returns:
        What was written: path, rows, partitions, files, columns, target, sensitive columns.

    Raises:
        PipelineInputError: bad arguments, or `path` already holds something.
    """
    _check_changes(shifts, relation)
    if rows < 1 or chunk_rows < 1 or not 1 <= partitions <= 100:
        raise PipelineInputError(
            f"generate: rows ({rows}) and chunk_rows ({chunk_rows}) must be positive, "
            f"partitions ({partitions}) between 1 and 100"
        )
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise PipelineInputError(f"generate: '{path}' already exists and is not empty")
    regions = [f"r{i:02d}" for i in range(partitions)]
    # Passed only when asked for: a default lake is made by the very call it always was.
    changes = {}
    if shifts:
        changes["shifts"] = shifts
    if relation != "reference":
        changes["relation"] = relation
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    writers: dict[int, pq.ParquetWriter] = {}
    try:
        for number, start in enumerate(range(0, rows, chunk_rows)):
            table, region = _chunk(seed, number, min(chunk_rows, rows - start), regions, **changes)
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
