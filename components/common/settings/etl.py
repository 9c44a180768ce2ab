"""The run config's `data.etl` section: what an ETL snapshot extracts (a file or a SQL
table), how it reads CSV, and the declared transforms, in order. The ingest step runs it
(components.ingest.snapshot); the run config checks it before anything runs.
"""

import codecs
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from components.common.errors import PipelineInputError
from components.common.secrets import redact_url, url_password_place

CAST_TYPES = ("int64", "float64", "string", "bool", "datetime")
DATE_PARTS = ("year", "month", "day", "dayofweek")
FILTER_OPS = ("==", "!=", "<", "<=", ">", ">=", "in", "not in")


class _Strict(BaseModel):
    # defer_build: a model is compiled when it first checks a value, not when it is imported,
    # so a command that reads a few keys (mlpipe models) does not pay for every section.
    model_config = ConfigDict(extra="forbid", defer_build=True)


class SqlSource(_Strict):
    """A SQL database, by SQLAlchemy URL (e.g. sqlite:///path/to.db), and one table or query."""

    url: str = Field(min_length=1, description="Without a password: it comes from the environment.")
    query: str = ""
    table: str = ""
    password_env: str = Field(
        "",
        description="The environment variable holding the database password (e.g. set from a "
        "Kubernetes Secret); empty: the driver's own (PGPASSWORD, ~/.pgpass, ...) or none.",
    )

    @model_validator(mode="before")
    @classmethod
    def _hide_a_password(cls, data):
        # pydantic's error carries the field's input, and error messages show it: the URL goes
        # on redacted, so the refusal below names it without its password.
        if isinstance(data, dict) and isinstance(data.get("url"), str):
            return {**data, "url": redact_url(data["url"])}
        return data

    @field_validator("url")
    @classmethod
    def _no_password(cls, value: str) -> str:
        if place := url_password_place(value):
            raise PydanticCustomError(
                "url_password",
                "put the password in the environment, not {place}: {url} "
                "(name the variable in password_env)",
                {"place": place, "url": redact_url(value)},
            )
        return value

    @model_validator(mode="after")
    def _one_of_query_or_table(self):
        if bool(self.query) == bool(self.table):
            raise ValueError("give exactly one of 'query' or 'table'")
        return self


class SourceSpec(_Strict):
    """Where the data comes from: a file or lake (`uri`), or a database (`sql`)."""

    uri: str = ""
    sql: SqlSource | None = None
    columns: list[str] = Field(
        default_factory=list, description="Keep only these columns; each must be in the source."
    )

    @model_validator(mode="after")
    def _one_of_uri_or_sql(self):
        if bool(self.uri) == (self.sql is not None):
            raise ValueError("give exactly one of 'uri' or 'sql'")
        return self


class CsvOptions(_Strict):
    """How CSV files are read."""

    delimiter: str = Field(",", min_length=1, max_length=1)
    quotechar: str = Field('"', min_length=1, max_length=1)
    encoding: str = "utf-8"
    na_values: list[str] = Field(default_factory=list)

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown encoding '{value}'") from None
        return value


class RenameStep(_Strict):
    rename: dict[str, str] = Field(min_length=1)


class CastStep(_Strict):
    cast: dict[str, Literal[CAST_TYPES]] = Field(min_length=1)


class FilterStep(_Strict):
    filter: tuple[str, Literal[FILTER_OPS], Any]

    @model_validator(mode="after")
    def _list_for_membership(self):
        _, op, value = self.filter
        if op in ("in", "not in") and not isinstance(value, list):
            raise ValueError(f"operator '{op}' needs a list of values")
        if op not in ("in", "not in") and (isinstance(value, list) or value is None):
            raise ValueError(f"operator '{op}' needs one value")
        return self


class Bins(_Strict):
    """Bins of a numeric column, by components.common.binning's rule: [low, high), values below
    the first edge in `< first` and at or above the last in `>= last`, missing stays missing.
    `labels` names the bins between edges (the open ends keep `< first` and `>= last`), or
    every bin, the two open ends first and last."""

    column: str
    edges: list[float] = Field(min_length=2)
    labels: list[str] | None = None

    @model_validator(mode="after")
    def _increasing(self):
        if any(b <= a for a, b in zip(self.edges, self.edges[1:], strict=False)):
            raise ValueError(f"edges {self.edges} must increase strictly")
        inner, every = len(self.edges) - 1, len(self.edges) + 1
        if self.labels is not None and len(self.labels) not in (inner, every):
            raise ValueError(
                f"{inner} labels (one per pair of edges) or {every} (the open ends too) needed "
                f"for {len(self.edges)} edges, got {len(self.labels)}"
            )
        return self


class Derivation(_Strict):
    """A new column `name`, from exactly one of: ratio, date_part, bins, concat."""

    name: str = Field(min_length=1)
    ratio: tuple[str, str] | None = None
    date_part: tuple[str, Literal[DATE_PARTS]] | None = None
    bins: Bins | None = None
    concat: list[str] | None = Field(None, min_length=2)
    separator: str = "_"

    @model_validator(mode="after")
    def _one_rule(self):
        rules = [r for r in ("ratio", "date_part", "bins", "concat") if getattr(self, r)]
        if len(rules) != 1:
            raise ValueError("give exactly one of ratio, date_part, bins, concat")
        return self

    @property
    def rule(self) -> str:
        return next(r for r in ("ratio", "date_part", "bins", "concat") if getattr(self, r))


class DeriveStep(_Strict):
    derive: Derivation


class DropStep(_Strict):
    drop: list[str] = Field(min_length=1)


STEP_KINDS = ("rename", "cast", "filter", "derive", "drop")


def step_kind(value) -> str | None:
    if isinstance(value, dict):
        return next(iter(value)) if len(value) == 1 else None
    return next((kind for kind in STEP_KINDS if hasattr(value, kind)), None)


Transform = Annotated[
    Annotated[RenameStep, Tag("rename")]
    | Annotated[CastStep, Tag("cast")]
    | Annotated[FilterStep, Tag("filter")]
    | Annotated[DeriveStep, Tag("derive")]
    | Annotated[DropStep, Tag("drop")],
    Discriminator(
        step_kind,
        custom_error_type="transform_step",
        custom_error_message=f"a transform is one key of {', '.join(STEP_KINDS)}",
    ),
]


class EtlSpec(_Strict):
    """What to extract, how to read CSV, and the transforms, in order."""

    source: SourceSpec
    csv: CsvOptions = Field(default_factory=CsvOptions)
    transforms: list[Transform] = Field(default_factory=list)


def load_spec(spec: dict | EtlSpec, where: str = "etl spec") -> EtlSpec:
    """Check an ETL spec given as a mapping.

    Raises:
        PipelineInputError: one line naming the key (e.g. `transforms.2.cast.age`).
    """
    if isinstance(spec, EtlSpec):
        return spec
    try:
        return EtlSpec.model_validate(spec)
    except ValidationError as error:
        first = error.errors()[0]
        # A transform's kind shows twice in pydantic's path (its tag, then its key): once is enough.
        loc = [
            part
            for i, part in enumerate(first["loc"])
            if not (
                part in STEP_KINDS and i + 1 < len(first["loc"]) and first["loc"][i + 1] == part
            )
        ]
        key = ".".join(str(part) for part in loc) or "(top level)"
        if first["type"] == "extra_forbidden":
            raise PipelineInputError(f"{where}: unknown key '{key}'") from None
        if first["type"] == "missing":
            raise PipelineInputError(f"{where}: missing key '{key}'") from None
        message = first["msg"].removeprefix("Value error, ")
        raise PipelineInputError(f"{where}: key '{key}': {message}") from None
