"""Edge export: the whole fitted pipeline (preprocessing and model) as one ONNX graph, run with
onnxruntime, checked row by row against scikit-learn on the held-out split.

The graph has one input per feature, named after the column (unless an output has the name):
numeric features are float64 (DoubleTensorType, shape [N, 1]; NaN means missing) and
categorical ones strings (StringTensorType, shape [N, 1]; a missing value is MISSING_CATEGORY,
as in training). A classifier's outputs are `label` [N] and `probabilities` [N, classes]
(classes in sorted order, no ZipMap); a regressor's output is `variable` [N, 1].

Why float64, and where float32: scikit-learn preprocesses in float64, so the graph does too
(skl2onnx's own SimpleImputer converter is float32-only in onnxruntime, hence the converter
below), and the values reaching the model are scikit-learn's to the bit. Tree ensembles then get
a cast to float32 in front: scikit-learn's forests compare in float32 themselves, and
onnxruntime's tree classifiers take and give float32 only. Measured on the loans table of the
tests, a random forest fed float32 all the way (skl2onnx's usual setup) flipped 0.4 % of the
labels and moved probabilities by up to 0.05; fed float64 into float64 trees, it flipped as many.
Histogram gradient boosting compares float64 values in scikit-learn, so for it the cast can in
principle move a value that lies within float32 rounding of a threshold: check_parity is what
vouches for every export.

A model with a tuned decision threshold (a FixedThresholdClassifier around the fitted pipeline)
is exported as its pipeline, and the graph's `label` is then rewritten to scikit-learn's rule:
the positive class where probabilities[:, positive] >= threshold (`_apply_threshold`); the
graph's metadata `decision_threshold` records the rule.

The project's own OutlierClipper, log transform (a FunctionTransformer of log1p_nonnegative)
and MissingIndicator on the categories convert with converters here; derived ratios and bins
(DerivedFeatures) and one-hot encoding with rare categories grouped (OneHotEncoder with
min_frequency, unseen categories to the infrequent column) with those of
components.export.converters. Not everything converts: bias-mitigated models (their per-row
random draws), a derived date part (dates are parsed from text, which no opset 17 operator does)
and other custom transformers. For those export_onnx raises NotConvertible, one line naming the
step and its class (and the derived feature), and the pipeline reports the export as skipped.
"""

import json
import os
import tempfile
import traceback
from pathlib import Path

import numpy as np
import pandas as pd

from components.common.errors import PipelineInputError
from components.common.onnx_runtime import (
    DEFAULT_ATOL,
    THRESHOLD_KEY,
    Answers,
    OnnxGraph,
    compare_answers,
    load_session,
    predict_onnx,
    threshold_rule,
)
from components.common.schema import CATEGORICAL, MISSING_CATEGORY, NUMERIC, as_model_input

# Opset 17 (onnxruntime >= 1.12, 2022) and ai.onnx.ml 3: every operator these pipelines need,
# and old enough that an edge device's onnxruntime can load the file.
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}

# Models the bias step can serve, and why ONNX cannot express them.
MITIGATED_MODELS = {
    "ThresholdOptimizedModel": (
        "bias mitigation threshold_optimizer: per-group thresholds and a random draw per row "
        "(a hash of the row), which no ONNX operator computes"
    ),
    "ExponentiatedGradientModel": (
        "bias mitigation exponentiated_gradient: a randomized mixture of classifiers with a "
        "draw per row (a hash of the row), which no ONNX operator computes"
    ),
}


class NotConvertible(PipelineInputError):
    """The fitted model has a step that ONNX (skl2onnx, onnxruntime) cannot reproduce.

    Attributes:
        step: where in the model, e.g. "prep/numeric/log" ("" for the model itself).
        class_name: the class of that step.
        why: the converter's (or our) explanation.
    """

    def __init__(self, class_name: str, why: str, step: str = ""):
        self.step = step
        self.class_name = class_name
        self.why = why
        where = f" at step '{step}'" if step else ""
        super().__init__(f"not convertible: {class_name}{where}: {why}")

    @property
    def reason(self) -> str:
        return str(self)


def _first_line(error: BaseException) -> str:
    """The error's first line, without skl2onnx's "You may raise an issue at ..." footer."""
    text = str(error).strip()
    line = text.splitlines()[0] if text else type(error).__name__
    line = line.split(" You may raise an issue")[0]
    return line[:300]


def _step_paths(model) -> dict[int, tuple[str, object]]:
    """id(step) -> (its path such as "prep/numeric/impute", the step) for every fitted step."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import FeatureUnion, Pipeline

    paths: dict[int, tuple[str, object]] = {}

    def walk(obj, path: str) -> None:
        if obj is None or isinstance(obj, str):  # "drop", "passthrough"
            return
        paths[id(obj)] = (path, obj)
        if isinstance(obj, Pipeline):
            children = [(name, step) for name, step in obj.steps]
        elif isinstance(obj, ColumnTransformer):
            fitted = getattr(obj, "transformers_", obj.transformers)
            children = [(name, transformer) for name, transformer, _ in fitted]
        elif isinstance(obj, FeatureUnion):
            children = list(obj.transformer_list)
        else:
            return
        for name, child in children:
            walk(child, f"{path}/{name}" if path else name)

    walk(model, "")
    return paths


def _check_steps(model) -> None:
    """Refuse what has no converter, or converts to a graph that would answer differently."""
    from skl2onnx._supported_operators import sklearn_operator_name_map
    from sklearn.pipeline import Pipeline

    from components.common.transformers import DerivedFeatures

    name = type(model).__name__
    if name in MITIGATED_MODELS:
        raise NotConvertible(name, MITIGATED_MODELS[name])
    if not isinstance(model, Pipeline):
        raise NotConvertible(name, "the served model is not a scikit-learn Pipeline")
    for path, step in _step_paths(model).values():
        step_class = type(step).__name__
        if step_class in MITIGATED_MODELS:
            raise NotConvertible(step_class, MITIGATED_MODELS[step_class], path)
        if type(step) not in sklearn_operator_name_map:
            raise NotConvertible(step_class, "skl2onnx has no converter for this class", path)
        if isinstance(step, DerivedFeatures):
            _check_derived(step, path)


def _check_derived(step, path: str) -> None:
    """Refuse a date part: the one derived feature no ONNX operator of opset 17 computes."""
    from components.export.converters import DATE_PART, derived_source

    for feature in step.features or []:
        if derived_source(feature) == DATE_PART:
            column, part = feature[DATE_PART]
            raise NotConvertible(
                type(step).__name__,
                f"derived feature '{feature['name']}' (date_part {part} of '{column}'): dates "
                "are parsed from text, and opset 17 has no operator that parses text",
                path,
            )


def _plain(value):
    """A JSON-friendly Python value."""
    return value.item() if isinstance(value, np.generic) else value


def _without_threshold(model) -> tuple[object, dict | None]:
    """A model with a tuned threshold (FixedThresholdClassifier over predict_proba, around the
    FrozenEstimator of the fitted pipeline) as (that pipeline, its rule for the graph's
    metadata); any other model as (model, None)."""
    rule = threshold_rule(model)
    if rule is None:
        return model, None
    column, threshold, positive, negative = rule
    inner = model.estimator_
    inner = getattr(inner, "estimator", inner)  # a FrozenEstimator holds the fitted pipeline
    classes = np.asarray(model.classes_)
    labels = [_plain(classes[negative]), _plain(classes[positive])]
    return inner, {"threshold": threshold, "column": column, "labels": labels}


def _in_float32(estimator) -> bool:
    """Tree ensembles: scikit-learn's forests compare in float32, onnxruntime's trees too."""
    return type(estimator).__module__.startswith(("sklearn.ensemble", "sklearn.tree"))


def _register_numeric_imputer() -> None:
    """Make prepare's NumericImputer (a SimpleImputer with a faster fit) known to skl2onnx,
    converted by the SimpleImputer converter below."""
    from skl2onnx import update_registered_converter
    from skl2onnx._supported_operators import sklearn_operator_name_map

    from components.common.transformers import NumericImputer

    if NumericImputer not in sklearn_operator_name_map:
        update_registered_converter(
            NumericImputer, "MlpipeNumericImputer", _imputer_shape, _imputer_converter
        )


def _register_project_transformers() -> None:
    """Make the project's own transformers known to skl2onnx, each with a converter below:
    OutlierClipper (clip to learnt bounds), MissingIndicator on the categories (the missing
    token's flags), DerivedFeatures (components.export.converters: ratios and bins) and the log
    transform (a FunctionTransformer of log1p_nonnegative; any other function keeps skl2onnx's
    identity-only converter, which refuses it)."""
    from skl2onnx import update_registered_converter
    from skl2onnx._supported_operators import sklearn_operator_name_map
    from sklearn.impute import MissingIndicator

    from components.common.transformers import DerivedFeatures, OutlierClipper
    from components.export.converters import (
        convert_derived_features,
        derived_features_shape,
        parse_derived_features,
    )

    if OutlierClipper not in sklearn_operator_name_map:
        update_registered_converter(
            OutlierClipper, "MlpipeOutlierClipper", _same_width_shape, _clipper_converter
        )
    if DerivedFeatures not in sklearn_operator_name_map:
        update_registered_converter(
            DerivedFeatures,
            "MlpipeDerivedFeatures",
            derived_features_shape,
            convert_derived_features,
            parser=parse_derived_features,
        )
    if MissingIndicator not in sklearn_operator_name_map:
        update_registered_converter(
            MissingIndicator, "MlpipeMissingIndicator", _indicator_shape, _indicator_converter
        )


def _indicator_shape(operator) -> None:
    """Output of MissingIndicator: one float64 0/1 column per feature it flags."""
    from skl2onnx.common.data_types import DoubleTensorType

    rows = operator.inputs[0].get_first_dimension()
    operator.outputs[0].type = DoubleTensorType([rows, len(operator.raw_operator.features_)])


def _indicator_converter(scope, operator, container) -> None:
    """MissingIndicator on the categorical columns (prepare's categorical_missing branch):
    1.0 where a flagged column holds the missing token, else 0.0. Only a text token converts
    (the categories reach the graph as strings, MISSING_CATEGORY for missing)."""
    from onnx import TensorProto
    from skl2onnx.common.data_types import StringTensorType
    from skl2onnx.operator_converters.common import concatenate_variables

    indicator = operator.raw_operator
    token = indicator.missing_values
    if not isinstance(token, str) or not all(
        isinstance(v.type, StringTensorType) for v in operator.inputs
    ):
        raise NotImplementedError(
            f"MissingIndicator with missing_values={token!r} on non-text columns"
        )
    values = concatenate_variables(scope, operator.inputs, container)

    def name(seed: str) -> str:
        return scope.get_unique_variable_name(seed)

    def node(op_type: str, inputs: list[str], output: str, **attrs) -> None:
        container.add_node(
            op_type, inputs, [output], name=scope.get_unique_operator_name(op_type), **attrs
        )

    index = name("flagged")
    flagged = list(map(int, indicator.features_))
    container.add_initializer(index, TensorProto.INT64, [len(flagged)], flagged)
    columns = name("columns")
    node("Gather", [values, index], columns, axis=1)
    # Equal takes strings from opset 19 only; ai.onnx.ml's LabelEncoder maps the token to 1.
    flags = name("flags")
    container.add_node(
        "LabelEncoder",
        [columns],
        [flags],
        name=scope.get_unique_operator_name("LabelEncoder"),
        op_domain="ai.onnx.ml",
        op_version=2,
        keys_strings=[token],
        values_floats=[1.0],
        default_float=0.0,
    )
    node("Cast", [flags], operator.outputs[0].full_name, to=TensorProto.DOUBLE)


def _input_width(operator) -> int:
    return sum(int(variable.type.shape[1]) for variable in operator.inputs)


def _same_width_shape(operator) -> None:
    """Output shape of a one-to-one transformer: as many columns as its inputs, same type."""
    input_type = type(operator.inputs[0].type)
    rows = operator.inputs[0].get_first_dimension()
    operator.outputs[0].type = input_type([rows, _input_width(operator)])


class _Nodes:
    """Adds nodes and constants to a converter's graph, in the input's float type."""

    def __init__(self, scope, operator, container):
        from onnx import TensorProto
        from skl2onnx.common.data_types import DoubleTensorType
        from skl2onnx.operator_converters.common import concatenate_variables

        self.scope, self.container = scope, container
        double = isinstance(operator.inputs[0].type, DoubleTensorType)
        self.dtype = np.float64 if double else np.float32
        self.proto = TensorProto.DOUBLE if double else TensorProto.FLOAT
        self.input = concatenate_variables(scope, operator.inputs, container)
        self.output = operator.outputs[0].full_name

    def constant(self, values, shape: list[int]) -> str:
        name = self.scope.get_unique_variable_name("constant")
        data = np.asarray(values, dtype=float).astype(self.dtype).ravel().tolist()
        self.container.add_initializer(name, self.proto, shape, data)
        return name

    def node(self, op_type: str, inputs: list[str], output: str | None = None) -> str:
        output = output or self.scope.get_unique_variable_name(op_type.lower())
        self.container.add_node(
            op_type, inputs, [output], name=self.scope.get_unique_operator_name(op_type)
        )
        return output

    def keep_missing(self, computed: str) -> None:
        """The output: `computed`, and NaN wherever the input is NaN (as numpy keeps it)."""
        missing = self.node("IsNaN", [self.input])
        self.node("Where", [missing, self.input, computed], self.output)


def _clipper_converter(scope, operator, container) -> None:
    """OutlierClipper: np.clip(x, lower_, upper_) per column; NaN stays NaN."""
    clipper = operator.raw_operator
    nodes = _Nodes(scope, operator, container)
    width = len(clipper.lower_)
    upper = nodes.constant(clipper.upper_, [1, width])
    lower = nodes.constant(clipper.lower_, [1, width])
    nodes.keep_missing(nodes.node("Max", [nodes.node("Min", [nodes.input, upper]), lower]))


def _log_converter(scope, operator, container) -> None:
    """FunctionTransformer(log1p_nonnegative): log(1 + max(x, 0)); NaN stays NaN. Any other
    function goes to skl2onnx's own converter (identity only: it refuses the rest)."""
    from skl2onnx.operator_converters.function_transformer import (
        convert_sklearn_function_transformer,
    )

    from components.common.transformers import log1p_nonnegative

    if operator.raw_operator.func is not log1p_nonnegative:
        convert_sklearn_function_transformer(scope, operator, container)
        return
    nodes = _Nodes(scope, operator, container)
    positive = nodes.node("Max", [nodes.input, nodes.constant([0.0], [])])
    shifted = nodes.node("Add", [positive, nodes.constant([1.0], [])])
    nodes.keep_missing(nodes.node("Log", [shifted]))


def _imputer_shape(operator) -> None:
    """Output shape of the float64-capable SimpleImputer converter below."""
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType
    from skl2onnx.shape_calculators.imputer import calculate_sklearn_imputer_output_shapes

    input_type = type(operator.inputs[0].type)
    if input_type not in (DoubleTensorType, FloatTensorType):
        calculate_sklearn_imputer_output_shapes(operator)
        return
    imputer = operator.raw_operator
    columns = int(np.sum(~np.isnan(imputer.statistics_.astype(float))))
    if imputer.add_indicator:
        columns += len(imputer.indicator_.features_)
    operator.outputs[0].type = input_type([operator.inputs[0].get_first_dimension(), columns])


def _imputer_converter(scope, operator, container) -> None:
    """SimpleImputer on numbers in float64, with add_indicator.

    skl2onnx's own converter uses the ai.onnx.ml Imputer operator, which onnxruntime runs in
    float32 only, and it leaves out the missing-value indicator. This one writes
    Where(IsNaN(x), statistics, x) in the input's own type, drops the columns that were empty at
    fit time (as scikit-learn does) and appends the indicator columns.
    """
    from onnx import TensorProto
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType
    from skl2onnx.operator_converters.common import concatenate_variables
    from skl2onnx.operator_converters.imputer_op import convert_sklearn_imputer

    input_type = type(operator.inputs[0].type)
    if input_type not in (DoubleTensorType, FloatTensorType):
        convert_sklearn_imputer(scope, operator, container)  # strings: skl2onnx's own
        return
    imputer = operator.raw_operator
    missing = imputer.missing_values
    if not (isinstance(missing, float) and np.isnan(missing)):
        raise NotImplementedError(
            f"SimpleImputer with missing_values={missing!r} on numbers (only NaN converts)"
        )
    double = input_type is DoubleTensorType
    dtype, proto = (np.float64, TensorProto.DOUBLE) if double else (np.float32, TensorProto.FLOAT)

    def name(seed: str) -> str:
        return scope.get_unique_variable_name(seed)

    def node(op_type: str, inputs: list[str], output: str, **attrs) -> None:
        container.add_node(
            op_type, inputs, [output], name=scope.get_unique_operator_name(op_type), **attrs
        )

    def columns(source: str, indices) -> str:
        index = name("columns")
        container.add_initializer(index, TensorProto.INT64, [len(indices)], list(map(int, indices)))
        selected = name("selected")
        node("Gather", [source, index], selected, axis=1)
        return selected

    features = concatenate_variables(scope, operator.inputs, container)
    statistics = imputer.statistics_.astype(float)
    kept = np.flatnonzero(~np.isnan(statistics))
    source = features if len(kept) == len(statistics) else columns(features, kept)
    fill = name("fill")
    container.add_initializer(fill, proto, [1, len(kept)], statistics[kept].astype(dtype).tolist())
    is_missing = name("is_missing")
    node("IsNaN", [source], is_missing)
    output = operator.outputs[0].full_name
    if not imputer.add_indicator:
        node("Where", [is_missing, fill, source], output)
        return
    imputed = name("imputed")
    node("Where", [is_missing, fill, source], imputed)
    flags = name("flags")
    node("IsNaN", [columns(features, imputer.indicator_.features_)], flags)
    indicator = name("indicator")
    node("Cast", [flags], indicator, to=proto)
    node("Concat", [imputed, indicator], output, axis=1)


def _graph_inputs(schema: dict) -> list[tuple[str, object]]:
    from skl2onnx.common.data_types import DoubleTensorType, StringTensorType

    inputs = []
    for feature in schema["features"]:
        if feature["kind"] == NUMERIC:
            inputs.append((feature["name"], DoubleTensorType([None, 1])))
        elif feature["kind"] == CATEGORICAL:
            inputs.append((feature["name"], StringTensorType([None, 1])))
        else:
            raise PipelineInputError(
                f"schema feature '{feature['name']}': kind '{feature['kind']}' is neither "
                f"{NUMERIC} nor {CATEGORICAL}"
            )
    return inputs


def export_onnx(model, schema: dict) -> bytes:
    """The fitted model (a Pipeline of preprocessor and estimator) as a serialized ONNX graph.

    Args:
        model: the served model from train.
        schema: the schema from validate (feature names and kinds, task, target).

    Returns:
        The ONNX model's bytes; onnxruntime has loaded them once.

    Raises:
        NotConvertible: naming the step and its class that skl2onnx or onnxruntime cannot
            handle (a bias-mitigated model is one).
    """
    import onnx
    from skl2onnx import convert_sklearn
    from skl2onnx.sklapi import CastTransformer
    from sklearn.base import is_classifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder

    from components.common.transformers import NumericImputer
    from components.export.converters import convert_one_hot_encoder, one_hot_shape

    _register_numeric_imputer()
    _register_project_transformers()
    model, decision_threshold = _without_threshold(model)
    _check_steps(model)
    estimator = model.steps[-1][1]
    steps = list(model.steps)
    if _in_float32(estimator):
        steps.insert(len(steps) - 1, ("float32", CastTransformer(dtype=np.float32)))
    graph_model = Pipeline(steps)
    options = {id(estimator): {"zipmap": False}} if is_classifier(estimator) else None
    try:
        proto = convert_sklearn(
            graph_model,
            initial_types=_graph_inputs(schema),
            target_opset=TARGET_OPSET,
            options=options,
            custom_conversion_functions={
                SimpleImputer: _imputer_converter,
                NumericImputer: _imputer_converter,
                FunctionTransformer: _log_converter,
                OneHotEncoder: convert_one_hot_encoder,
            },
            custom_shape_calculators={
                SimpleImputer: _imputer_shape,
                NumericImputer: _imputer_shape,
                FunctionTransformer: _same_width_shape,
                OneHotEncoder: one_hot_shape,
            },
        )
    except Exception as error:  # any converter failure: say which step
        path, step = _failing_step(error, model)
        raise NotConvertible(type(step).__name__, _first_line(error), path) from error
    if decision_threshold is not None:
        _apply_threshold(proto.graph, decision_threshold)
    inputs = _restore_input_names(proto.graph, [f["name"] for f in schema["features"]])
    onnx.helper.set_model_props(
        proto,
        {
            "inputs": json.dumps(inputs),
            "task": schema["task"],
            "target": str(schema["target"]),
            "features": json.dumps(schema["features"]),
            "missing_category": MISSING_CATEGORY,
            "classes": json.dumps([str(c) for c in getattr(model, "classes_", [])]),
            **({THRESHOLD_KEY: json.dumps(decision_threshold)} if decision_threshold else {}),
        },
    )
    data = proto.SerializeToString()
    try:
        load_session(data)
    except Exception as error:  # an operator onnxruntime lacks
        raise NotConvertible(
            "ONNX graph", f"onnxruntime cannot load it: {_first_line(error)}"
        ) from error
    return data


def _apply_threshold(graph, rule: dict) -> None:
    """Make the graph's `label` output scikit-learn's FixedThresholdClassifier rule:
    labels[probabilities[:, column] >= threshold], with labels = [negative, positive].

    skl2onnx writes the estimator's own label (argmax of the probabilities); that node's output
    is renamed, and Gather, GreaterOrEqual, Cast and Gather compute the label under its name.
    """
    from onnx import TensorProto, helper

    label, probabilities = graph.output[0], graph.output[1]
    label_type = label.type.tensor_type.elem_type
    proba_type = probabilities.type.tensor_type.elem_type
    if label_type == TensorProto.STRING:
        labels = [str(value).encode() for value in rule["labels"]]
    elif label_type == TensorProto.INT64 and all(
        isinstance(v, int) and not isinstance(v, bool) for v in rule["labels"]
    ):
        labels = [int(value) for value in rule["labels"]]
    else:
        raise NotConvertible(
            "FixedThresholdClassifier",
            f"a tuned threshold over class labels {rule['labels']!r} (only text or integer "
            "labels are written into the graph)",
        )
    if proba_type not in (TensorProto.FLOAT, TensorProto.DOUBLE):
        raise NotConvertible("FixedThresholdClassifier", "the graph's probabilities are not floats")
    unthresholded = f"{label.name}_argmax"
    for node in graph.node:
        node.output[:] = [unthresholded if name == label.name else name for name in node.output]
        node.input[:] = [unthresholded if name == label.name else name for name in node.input]
    names = {
        key: f"mlpipe_threshold_{key}" for key in ("column", "value", "labels", "score", "is_pos")
    }
    names["index"] = "mlpipe_threshold_index"
    graph.initializer.extend(
        [
            helper.make_tensor(names["column"], TensorProto.INT64, [], [int(rule["column"])]),
            helper.make_tensor(names["value"], proba_type, [], [float(rule["threshold"])]),
            helper.make_tensor(names["labels"], label_type, [2], labels),
        ]
    )
    graph.node.extend(
        [
            helper.make_node(
                "Gather", [probabilities.name, names["column"]], [names["score"]], axis=1
            ),
            helper.make_node("GreaterOrEqual", [names["score"], names["value"]], [names["is_pos"]]),
            helper.make_node("Cast", [names["is_pos"]], [names["index"]], to=TensorProto.INT64),
            helper.make_node("Gather", [names["labels"], names["index"]], [label.name], axis=0),
        ]
    )


def _restore_input_names(graph, features: list[str]) -> dict[str, str]:
    """Name each graph input after its column again; returns feature -> graph input name.

    skl2onnx makes input names identifiers ("education-num" becomes "education_num") and moves
    aside names its outputs use ("label" becomes "label1"). A client feeds columns by name, so
    the column's own name comes back wherever no other tensor in the graph has it.
    """
    if len(graph.input) != len(features):  # skl2onnx keeps every declared input, unused too
        raise NotConvertible(
            "ONNX graph", f"{len(graph.input)} graph inputs for {len(features)} features"
        )
    taken = {name for node in graph.node for name in (*node.input, *node.output)}
    taken |= {t.name for t in (*graph.initializer, *graph.output, *graph.value_info, *graph.input)}
    names = {}
    for graph_input, feature in zip(graph.input, features, strict=True):
        old = graph_input.name
        if old != feature and feature not in taken:
            for node in graph.node:
                node.input[:] = [feature if name == old else name for name in node.input]
            graph_input.name = feature
            taken.discard(old)
            taken.add(feature)
        names[feature] = graph_input.name
    return names


def _failing_step(error: BaseException, model) -> tuple[str, object]:
    """The innermost step whose converter was running when `error` was raised, else the model.

    skl2onnx passes each step to its converter as `operator.raw_operator`; the traceback's
    frames still hold it.
    """
    paths = _step_paths(model)
    found: tuple[str, object] = ("", model)
    for frame, _ in traceback.walk_tb(error.__traceback__):
        raw = getattr(frame.f_locals.get("operator"), "raw_operator", None)
        if raw is not None and id(raw) in paths:
            found = paths[id(raw)]
    return found


def check_parity(
    model, onnx_bytes: bytes, test_frame: pd.DataFrame, schema: dict, atol: float = DEFAULT_ATOL
) -> dict:
    """Compare the ONNX graph with scikit-learn on every row of `test_frame`
    (`components.common.onnx_runtime.compare_answers`: identical labels and probabilities
    within `atol`, or regression values within `atol` relative above 1).

    Returns:
        {"converted": True, "passed", "rows", "task", "atol", "tolerance", "label_mismatches"
        (None for regression), "max_abs_diff", "differing_rows": the first 20 rows that differ,
        each with its position in `test_frame` and the scikit-learn and ONNX values}.

    Raises:
        NotConvertible: onnxruntime failed on the rows (an operator that cannot handle them).
        PipelineInputError: the test split is empty.
    """
    if len(test_frame) == 0:
        raise PipelineInputError("test dataset: no rows, so parity cannot be checked")
    graph = OnnxGraph.from_bytes(onnx_bytes)
    features = as_model_input(test_frame, schema)
    try:
        onnx_first, onnx_proba = predict_onnx(graph, test_frame, schema)
    except PipelineInputError:
        raise
    except Exception as error:  # onnxruntime raises its own classes
        raise NotConvertible(
            "ONNX graph", f"onnxruntime failed on the test rows: {_first_line(error)}"
        ) from error
    classification = schema["task"] == "classification"
    sk_proba = None
    if classification and onnx_proba is not None and hasattr(model, "predict_proba"):
        sk_proba = model.predict_proba(features)
    sklearn = Answers(np.asarray(model.predict(features)), sk_proba)
    onnx = Answers(onnx_first, onnx_proba if sk_proba is not None else None)
    return {"converted": True, **compare_answers(sklearn, onnx, schema["task"], atol)}


def refuse_unproven_threshold(model, result: dict) -> None:
    """A tuned threshold whose graph failed parity is not convertible, not a failed run.

    A threshold chosen on out-of-fold probabilities often equals a probability exactly (a
    forest's 30 of 100 trees: 0.3); the graph's float32 probabilities land on either side of
    it, and the label flips where scikit-learn's float64 does not. Such a model is skipped with
    this reason, and the server answers with scikit-learn.

    Raises:
        NotConvertible: `model` has a tuned threshold and `result` did not pass.
    """
    rule = threshold_rule(model)
    if rule is None or result["passed"]:
        return
    raise NotConvertible(
        "FixedThresholdClassifier",
        f"tuned threshold {rule[1]:g}: {result['differing']} of {result['rows']} test rows "
        "differ from scikit-learn (probabilities within rounding of the threshold decide "
        "differently in the graph)",
    )


def refuse_tied_rows(result: dict) -> None:
    """A graph that differs from scikit-learn only on ties is not convertible, not a failed run.

    A forest with an even number of trees gives some rows exactly half the votes; scikit-learn
    takes the first class of a tie, the graph's float32 arithmetic may take the other. The
    graph is right everywhere else, but an edge model that answers a row otherwise than the
    server is not exported: the export is skipped with this reason, and the server answers with
    scikit-learn. Any other difference still fails the run.

    Raises:
        NotConvertible: every differing row of `result` is such a tie.
    """
    ties = result.get("tied_label_mismatches") or 0
    if result["passed"] or ties != result["differing"]:
        return
    raise NotConvertible(
        "ONNX graph",
        f"{ties} of {result['rows']} test rows are ties (two classes equally probable, such as "
        "half of an even number of trees) that the graph decides otherwise than scikit-learn",
    )


def export_checked(model, schema: dict, test_frame: pd.DataFrame) -> tuple[bytes, dict]:
    """What the export step does with a fitted model: convert it, check the graph on every row of
    `test_frame`, and refuse a graph whose only differences are a tuned threshold's rounding or
    tied rows (`refuse_unproven_threshold`, `refuse_tied_rows`).

    Returns:
        (the graph, the parity check), which may have failed.

    Raises:
        NotConvertible: the model cannot be converted, or its graph is refused.
    """
    data = export_onnx(model, schema)
    result = check_parity(model, data, test_frame, schema)
    refuse_unproven_threshold(model, result)
    refuse_tied_rows(result)
    return data, result


def export_report_markdown(result: dict) -> str:
    """The export's section for the dashboard: skipped with its reason, or the parity check."""
    lines = ["## Edge export (ONNX)\n"]
    if not result.get("converted"):
        lines.append(f"Skipped: {result['reason']}.\n")
        lines.append("The scikit-learn model is served as usual; there is no ONNX file.\n")
        return "\n".join(lines) + "\n"
    verdict = "passed" if result["passed"] else "**failed**"
    lines += [
        f"Parity with scikit-learn on {result['rows']} held-out rows: {verdict} "
        f"({result['tolerance']}).\n",
        "| check | value |",
        "|---|---|",
        f"| rows compared | {result['rows']} |",
        f"| rows that differ | {result['differing']} |",
    ]
    if result["label_mismatches"] is not None:
        lines.append(f"| label mismatches | {result['label_mismatches']} |")
    lines.append(f"| largest difference | {result['max_abs_diff']:.3g} |")
    if "opset" in result:
        lines.append(f"| opset | {result['opset']} |")
    if "bytes" in result:
        lines.append(f"| file size | {result['bytes']:,} bytes |")
    lines.append("")
    if result["differing_rows"]:
        lines += [
            "First rows that differ:\n",
            "| test row | scikit-learn | ONNX |",
            "|---|---|---|",
        ]
        for row in result["differing_rows"]:
            if "sklearn_label" in row:
                sk = f"{row['sklearn_label']} {_probabilities(row.get('sklearn_probabilities'))}"
                ox = f"{row['onnx_label']} {_probabilities(row.get('onnx_probabilities'))}"
            else:
                sk, ox = f"{row['sklearn']:.6g}", f"{row['onnx']:.6g}"
            lines.append(f"| {row['row']} | {sk.strip()} | {ox.strip()} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def _probabilities(values) -> str:
    return "" if values is None else "[" + ", ".join(f"{v:.6f}" for v in values) + "]"


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write a binary file atomically (temporary file, then rename), like io.write_text."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
