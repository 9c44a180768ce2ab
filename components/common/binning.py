"""The one binning rule: how a number and a list of increasing edges make a bin.

Three config keys cut a numeric column at edges: the ETL's `derive: {bins: {column, edges}}`,
prepare's `prepare.derived: [{bins: {column, edges}}]` (inside the served model) and the bias
steps' `bias.bands`. All three follow this rule, so `edges: [0, 18, 65]` means the same thing
everywhere:

- Bins are half-open, closed on the left: a value v is in `[edges[i], edges[i+1])` when
  `edges[i] <= v < edges[i+1]`. 18 is in `[18, 65)`, not in `[0, 18)`.
- Values below the first edge are a bin of their own, `< 0`; values at or above the last edge
  are a bin of their own, `>= 65`. No number is dropped or merged with a missing value: a served
  model or a fairness report sees a value it was not told about in an open end bin, not as
  missing. (Edges that are infinite are the open end themselves: the bin `[-inf, 10)` is
  labelled `< 10`, and `[10, inf)` is `>= 10`.)
- A missing value (None, NaN, or text that is not a number) is in no bin: it stays missing
  (the ETL writes a missing value, prepare its missing category, the bias steps their
  "missing" group).

Codes, for a number per bin (prepare's `kind: numeric` bins): 0 for `< edges[0]`, i for
`[edges[i-1], edges[i])`, len(edges) for `>= edges[-1]`, NaN for missing; this is
numpy.searchsorted(edges, v, side="right").

Labels: an edge is written in Python's "g" format when that gives back the same number (18, 0.5,
1e+06), and in full otherwise (1234567, 0.1234567: so two edges never share a label).
"""

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd


def edge_text(edge: float) -> str:
    """An edge as it appears in a label: 18, 0.5, 1e+06; in full where "g" would round it
    (1234567, not 1.23457e+06)."""
    short = f"{edge:g}"
    if float(short) == float(edge):
        return short
    return str(int(edge)) if float(edge).is_integer() else repr(float(edge))


def bin_labels(edges: Sequence[float], names: Sequence[str] | None = None) -> list[str]:
    """The label of each bin code: `< first`, `[a, b)` for each pair of edges, `>= last`.

    Args:
        edges: strictly increasing numbers.
        names: optional names instead of the default labels: one per pair of edges (the two
            open end bins keep their default labels), or one per bin (len(edges) + 1, the end
            bins included).

    Returns:
        len(edges) + 1 labels, indexed by the codes of `bin_index`.
    """
    edges = [float(e) for e in edges]
    labels = [f"< {edge_text(edges[0])}"]
    for low, high in zip(edges, edges[1:], strict=False):
        if math.isinf(low):
            labels.append(f"< {edge_text(high)}")
        elif math.isinf(high):
            labels.append(f">= {edge_text(low)}")
        else:
            labels.append(f"[{edge_text(low)}, {edge_text(high)})")
    labels.append(f">= {edge_text(edges[-1])}")
    if names is None:
        return labels
    names = [str(n) for n in names]
    if len(names) == len(edges) - 1:
        return [labels[0], *names, labels[-1]]
    if len(names) == len(edges) + 1:
        return names
    raise ValueError(
        f"{len(names)} labels for {len(edges)} edges: give {len(edges) - 1} (one per pair of "
        f"edges) or {len(edges) + 1} (the two open ends too)"
    )


def as_numbers(values) -> np.ndarray:
    """Values as float64, NaN for a missing value or text that is not a number."""
    series = (
        values if isinstance(values, pd.Series) else pd.Series(np.asarray(values, dtype=object))
    )
    numbers = pd.to_numeric(series, errors="coerce")
    return numbers.to_numpy(dtype=np.float64, na_value=np.nan)


def bin_index(values, edges: Sequence[float]) -> np.ndarray:
    """Each value's bin code (see the module docstring): float64, NaN for a missing value."""
    numbers = as_numbers(values)
    codes = np.searchsorted(np.asarray(edges, dtype=np.float64), numbers, side="right")
    return np.where(np.isnan(numbers), np.nan, codes.astype(np.float64))


def bin_values(
    values, edges: Sequence[float], names: Sequence[str] | None = None, missing=None
) -> np.ndarray:
    """Each value's bin label (an object array), `missing` for a missing value."""
    codes = bin_index(values, edges)
    labels = np.asarray(bin_labels(edges, names), dtype=object)
    out = np.full(len(codes), missing, dtype=object)
    present = ~np.isnan(codes)
    out[present] = labels[codes[present].astype(np.intp)]
    return out
