"""Which rule updates each family incrementally (components.common.incremental applies them),
and the error that sends a retraining back to full. Plain names that import no ML library: the
plan step decides full or incremental with them without loading scikit-learn (about 2 s a run).
"""

from components.common.errors import PipelineInputError
from components.common.families import FAMILIES

PARTIAL_FIT = "partial_fit"
WARM_START = "warm_start"
REFIT_WINDOW = "refit_window"
UPDATE_RULES: dict[str, str] = {
    "sgd_linear": PARTIAL_FIT,
    "random_forest": WARM_START,
    "logistic_regression": REFIT_WINDOW,
    "linear_regression": REFIT_WINDOW,
    "hist_gradient_boosting": REFIT_WINDOW,
}


class IncrementalNotSupported(PipelineInputError):
    """This champion cannot be updated by its family's rule; the caller retrains in full.

    Attributes:
        reason: one line, naming the rule and what prevents it.
    """

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(f"incremental update not possible: {reason}")


def update_rule(family: str) -> str:
    """The family's update rule: partial_fit, warm_start or refit_window.

    Raises:
        PipelineInputError: an unknown family, naming tuning.families.
    """
    if family not in FAMILIES:
        raise PipelineInputError(
            f"tuning.families: unknown family '{family}' (known: {', '.join(FAMILIES)})"
        )
    return UPDATE_RULES.get(family, REFIT_WINDOW)
