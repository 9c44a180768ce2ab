"""Where model versions registered before 0.1.0's layering name the transform's classes.

A pickle names each class by its module path: a model saved when these classes lived here says
`components.prepare.transformers.DerivedFeatures`. They now live in components.common.transformers
(every stage and the model server share them); this module keeps the old names loadable.
"""

from components.common.transformers import (  # noqa: F401
    DerivedFeatures,
    NumericImputer,
    OutlierClipper,
    log1p_nonnegative,
    parse_dates,
)
