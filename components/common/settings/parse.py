"""A run config section, as a step receives it (one pipeline parameter), checked by the same
pydantic model that checked it when the config was loaded."""

from typing import TypeVar

from pydantic import BaseModel, ValidationError

from components.common.errors import PipelineInputError

Section = TypeVar("Section", bound=BaseModel)


def describe_error(error: ValidationError, section: str) -> str:
    """pydantic's first error as one line naming the key, e.g. "tuning.num_trials: ..."."""
    first = error.errors()[0]
    key = ".".join(str(part) for part in (section, *first["loc"]))
    if first["type"] == "extra_forbidden":
        return f"{key}: unknown key"
    if first["type"] == "missing":
        return f"{key}: missing key"
    message = first["msg"].removeprefix("Value error, ")
    # A section-level check has the whole mapping as input, not worth repeating; a key's has.
    if isinstance(first.get("input"), dict):
        return f"{key}: {message}"
    return f"{key}: {message} (got {first.get('input')!r})"


def parse_section(model: type[Section], values: dict | None, section: str) -> Section:
    """The section `values` (a pipeline parameter's dict) as its checked model.

    Raises:
        PipelineInputError: one line naming the key, e.g. "bias.min_group_size: ...".
    """
    try:
        return model.model_validate(values or {})
    except ValidationError as error:
        raise PipelineInputError(describe_error(error, section)) from None
