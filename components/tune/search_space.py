"""The Ray Tune search space of the run's model families (components.common.families holds the
families, their default spaces and the grammar of a user's overrides).

The Ray Tune space is flat, with keys "<family>.<param>", so that every searcher (random, Optuna's
TPE) can sample it; the family itself is one more choice, and a trial uses the keys of the family
it drew and ignores the rest.
"""

from ray import tune

from components.common.families import (
    FAMILY_KEY,
    RESOURCES,
    check_families,
    check_space_overrides,
    family_specs,
    spec_high,
)


def to_domain(spec):
    """A checked spec as a Ray Tune domain (or the fixed value itself)."""
    if not isinstance(spec, dict):
        return spec
    kind, arguments = next(iter(spec.items()))
    if kind == "choice":
        return tune.choice(arguments)
    low, high = arguments
    if kind == "randint":
        return tune.randint(int(low), int(high) + 1)  # Ray's upper end is exclusive
    return getattr(tune, kind)(float(low), float(high))


def search_space(families: list[str], task: str, overrides: dict | None = None) -> dict:
    """The Ray Tune param_space: the family as a choice, then every family's parameters."""
    check_families(families, task)
    check_space_overrides(overrides)
    space: dict = {FAMILY_KEY: tune.choice(sorted(families))}
    for family in sorted(families):
        for name, spec in family_specs(family, overrides).items():
            space[f"{family}.{name}"] = to_domain(spec)
    return space


def resource_tops(families: list[str], overrides: dict | None = None) -> dict[str, float]:
    """family -> the largest value of its iteration resource in this space."""
    tops = {}
    for family in families:
        resource = RESOURCES.get(family)
        if resource is not None:
            top = spec_high(family_specs(family, overrides).get(resource, 100))
            if top and top >= 1:
                tops[family] = top
    return tops
