import numpy as np
import pandas as pd
import pytest

import components.common.categoricals as categoricals
from components.common.categoricals import occurring_categories


@pytest.mark.parametrize("count_rows", [7, 1000, 1 << 20])  # many slices, a ragged last one, one
def test_occurring_categories_are_those_remove_unused_categories_keeps(count_rows, monkeypatch):
    monkeypatch.setattr(categoricals, "COUNT_ROWS", count_rows)
    rng = np.random.default_rng(0)
    categories = [f"c{i}" for i in range(300)]  # 300: codes wider than one byte
    for rows in (1, 50, 999, 5000):
        codes = rng.integers(-1, rng.integers(1, 300), rows)  # -1: missing
        values = pd.Series(pd.Categorical.from_codes(codes, categories=categories))
        expected = values.cat.remove_unused_categories().cat.categories
        pd.testing.assert_index_equal(occurring_categories(values), expected)
    empty = pd.Series(pd.Categorical([], categories=["a", "b"]))
    assert list(occurring_categories(empty)) == []
    missing_only = pd.Series(pd.Categorical([None, None], categories=["a"]))
    assert list(occurring_categories(missing_only)) == []
