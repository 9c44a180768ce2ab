"""Where model versions registered before 0.1.0's layering name the mitigated models' classes.

A pickle names each class by its module path: a mitigated model saved when these classes lived
here says `components.bias.mitigation.ExponentiatedGradientModel`. They now live in
components.common.mitigation (train fits them, the model server loads them); this module keeps
the old names loadable.
"""

from components.common.mitigation import (  # noqa: F401
    ExponentiatedGradientModel,
    ThresholdOptimizedModel,
)
