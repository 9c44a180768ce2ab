"""The names the run config, the stages and the reports share: feature kinds and tasks, metrics, the threshold
rules, fairness summary metrics and their directions, bias mitigations and their constraints,
deploy targets. Plain data, importing nothing: the run config is checked against these names
before any step runs, without loading scikit-learn, fairlearn or Ray.
"""

# --- The schema ------------------------------------------------------------------------------

NUMERIC = "numeric"
CATEGORICAL = "categorical"
FEATURE_KINDS = (NUMERIC, CATEGORICAL)
TASKS = ("classification", "regression")

# What a missing categorical value becomes before the transform (see schema.as_model_input), so
# that categorical columns hold strings only; derived categorical features use it too.
MISSING_CATEGORY = "__missing__"

# --- Evaluation -----------------------------------------------------------------------------

THRESHOLD_RULES = ("fixed", "max_f1", "target_precision")
# Every metric evaluation reports, by task, in the order reports show them.
CLASSIFICATION_METRICS = (
    "accuracy",
    "balanced_accuracy",
    "precision",
    "recall",
    "f1",
    "roc_auc",
    "roc_auc_ovr",
    "pr_auc",
    "log_loss",
    "brier",
)
REGRESSION_METRICS = ("mse", "rmse", "mae", "r2")
# Metrics where a smaller value is better; every other metric here is better when larger.
LOWER_IS_BETTER = frozenset({"log_loss", "brier", "mse", "rmse", "mae"})


def higher_is_better(metric: str) -> bool:
    return metric not in LOWER_IS_BETTER


def primary_metric(task: str, classes: int) -> str:
    """The metric the champion comparison uses by default."""
    if task == "regression":
        return "r2"
    return "roc_auc" if classes == 2 else "roc_auc_ovr"


# --- Fairness -------------------------------------------------------------------------------

# Summary metrics by task (the fairness step's, and the fairness gate's thresholds).
CLASSIFICATION_SUMMARIES = (
    "demographic_parity_difference",
    "demographic_parity_ratio",
    "disparate_impact_ratio",
    "equalized_odds_difference",
    "equal_opportunity_difference",
    "accuracy_difference",
)
REGRESSION_SUMMARIES = ("mae_difference", "mae_ratio")
SUMMARY_METRICS = CLASSIFICATION_SUMMARIES + REGRESSION_SUMMARIES

AT_LEAST = "at_least"
AT_MOST = "at_most"
DIRECTIONS = (AT_LEAST, AT_MOST)


def default_direction(metric: str) -> str:
    """A fairness threshold's direction when none is given: ratios at least, differences at most."""
    return AT_LEAST if metric.endswith("_ratio") else AT_MOST


ON_NOT_COMPUTABLE = ("warn", "fail")

# Two sensitive columns grouped together are a set named "a_x_b" (fairness thresholds name it).
INTERSECTION_MARK = "_x_"


def intersection_name(pair: list[str] | tuple[str, str]) -> str:
    return INTERSECTION_MARK.join(pair)


MITIGATIONS = ("none", "reweighing", "exponentiated_gradient", "threshold_optimizer")
# fairlearn's reduction constraints, by the name the run config gives them.
CONSTRAINTS = (
    "demographic_parity",
    "equalized_odds",
    "true_positive_rate_parity",
    "false_positive_rate_parity",
    "error_rate_parity",
)
# ThresholdOptimizer's own names for its constraints.
THRESHOLD_CONSTRAINTS = (
    "demographic_parity",
    "equalized_odds",
    "true_positive_rate_parity",
    "false_positive_rate_parity",
)

# --- Deployment -----------------------------------------------------------------------------

DEPLOY_TARGETS = ("local", "kserve", "gitops")
