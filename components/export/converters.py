"""ONNX converters for two of prepare's option groups: derived features (prepare.derived) and
one-hot encoding with rare categories grouped (rare_min_frequency with encode: onehot).

Derived features. DerivedFeatures adds columns to the table it receives, and the
ColumnTransformer after it picks columns by name. In the graph, `parse_derived_features` keeps
every input variable and declares one more per derived feature, named after it (float64 [N, 1]
for a numeric one, a string [N, 1] for a categorical one), so that the ColumnTransformer finds
them by name as it finds the raw features. `convert_derived_features` computes them as
components.common.transformers.derive does:

- ratio: numerator / denominator; a zero denominator (an infinity or 0/0) and a missing
  operand give NaN, the imputer's missing value.
- bins (components.common.binning's rule): the code is how many edges are <= the value, which
  is numpy.searchsorted(edges, value, side="right") for increasing edges; NaN stays NaN; a
  categorical bin is the code's label (binning.bin_labels), MISSING_CATEGORY for NaN.
- date_part is refused before conversion (components.export.logic): dates are parsed from text,
  and opset 17 has no operator that parses text.

One-hot with rare grouping. skl2onnx's OneHotEncoder converter fails on a category unseen in
training (its OneHotEncoder operator has no "infrequent" column). `convert_one_hot_encoder`
writes, per column, an ai.onnx.ml LabelEncoder from each training category to its output column
(scikit-learn's own `_default_to_infrequent_mappings`: frequent categories in order, every
infrequent one to the last column), an unseen category to the infrequent column when the column
has one (handle_unknown infrequent_if_exist) and to -1 otherwise, then compares the code with
each column's index: -1 matches none, so the row is all zeros, as in scikit-learn. Encoders
without grouping keep skl2onnx's converter.
"""

import numpy as np

from components.common.binning import bin_labels
from components.common.schema import MISSING_CATEGORY

RATIO, BINS, DATE_PART = "ratio", "bins", "date_part"


def derived_source(feature: dict) -> str:
    """Which of ratio, date_part or bins a derived feature (a DerivedFeatures entry) is."""
    for source in (RATIO, DATE_PART, BINS):
        if feature.get(source):
            return source
    raise ValueError(f"derived feature '{feature.get('name')}' has no ratio, date_part or bins")


def _derived_type(feature: dict, rows):
    from skl2onnx.common.data_types import DoubleTensorType, StringTensorType

    if feature["kind"] == "categorical":
        return StringTensorType([rows, 1])
    return DoubleTensorType([rows, 1])


def _derived_inputs(feature: dict) -> list[str]:
    """The raw columns a derived feature reads."""
    source = derived_source(feature)
    if source == RATIO:
        return list(feature[RATIO])
    if source == DATE_PART:
        return [feature[DATE_PART][0]]
    return [feature[BINS]["column"]]


def parse_derived_features(scope, model, inputs, custom_parsers=None):
    """skl2onnx parser of DerivedFeatures: the input variables, then one variable per derived
    feature (named after it), computed by one operator from the inputs it reads."""
    features = model.features or []
    if not features:
        return list(inputs)
    # Declared first, so that an error below is reported at this step (its raw_operator).
    operator = scope.declare_local_operator("MlpipeDerivedFeatures", model)
    by_name = {variable.raw_name: variable for variable in inputs}
    used = []
    for feature in features:
        for column in _derived_inputs(feature):
            if column not in by_name:
                raise RuntimeError(
                    f"derived feature '{feature['name']}': column '{column}' is not an input"
                )
            if by_name[column] not in used:
                used.append(by_name[column])
    operator.inputs = used
    rows = inputs[0].get_first_dimension()
    for feature in features:
        variable = scope.declare_local_variable(feature["name"], _derived_type(feature, rows))
        operator.outputs.append(variable)
    return [*inputs, *operator.outputs]


def derived_features_shape(operator) -> None:
    """The outputs' types are set by the parser (one column each, float64 or string)."""
    rows = operator.inputs[0].get_first_dimension()
    for feature, output in zip(operator.raw_operator.features, operator.outputs, strict=True):
        output.type = _derived_type(feature, rows)


class _Graph:
    """Adds nodes and constants to a converter's graph under unique names."""

    def __init__(self, scope, container):
        self.scope, self.container = scope, container

    def constant(self, proto_type: int, values, shape: list[int]) -> str:
        name = self.scope.get_unique_variable_name("constant")
        self.container.add_initializer(name, proto_type, shape, values)
        return name

    def node(self, op_type: str, inputs: list[str], output: str | None = None, **attrs) -> str:
        output = output or self.scope.get_unique_variable_name(op_type.lower())
        domain = {"op_domain": "ai.onnx.ml", "op_version": 2} if op_type == "LabelEncoder" else {}
        self.container.add_node(
            op_type,
            inputs,
            [output],
            name=self.scope.get_unique_operator_name(op_type),
            **domain,
            **attrs,
        )
        return output


def convert_derived_features(scope, operator, container) -> None:
    """Each derived feature into its output variable (see the module docstring)."""
    from onnx import TensorProto
    from skl2onnx.common.data_types import DoubleTensorType

    graph = _Graph(scope, container)
    inputs = {variable.raw_name: variable for variable in operator.inputs}

    def number(column: str) -> str:
        variable = inputs[column]
        if not isinstance(variable.type, DoubleTensorType):
            raise NotImplementedError(f"derived feature input '{column}' is not float64")
        return variable.full_name

    for feature, output in zip(operator.raw_operator.features, operator.outputs, strict=True):
        source = derived_source(feature)
        if source == RATIO:
            numerator, denominator = (number(column) for column in feature[RATIO])
            ratio = graph.node("Div", [numerator, denominator])
            nan = graph.constant(TensorProto.DOUBLE, [np.nan], [])
            # x / 0 is an infinity (0 / 0 is NaN already): missing, as derive makes it.
            graph.node("Where", [graph.node("IsInf", [ratio]), nan, ratio], output.full_name)
        elif source == BINS:
            _bins(graph, number(feature[BINS]["column"]), feature, output.full_name)
        else:
            raise NotImplementedError(
                f"derived feature '{feature['name']}': date_part parses dates from text, which "
                "no ONNX operator of opset 17 does"
            )


def _bins(graph: _Graph, values: str, feature: dict, output: str) -> None:
    """The bin code (how many edges are <= the value), or its label for a categorical bin."""
    from onnx import TensorProto

    edges = [float(edge) for edge in feature[BINS]["edges"]]
    if any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
        raise NotImplementedError(f"derived feature '{feature['name']}': edges not increasing")
    edge_row = graph.constant(TensorProto.DOUBLE, edges, [1, len(edges)])
    at_or_above = graph.node("GreaterOrEqual", [values, edge_row])  # NaN: False everywhere
    is_missing = graph.node("IsNaN", [values])
    axis = graph.constant(TensorProto.INT64, [1], [1])
    if feature["kind"] != "categorical":
        flags = graph.node("Cast", [at_or_above], to=TensorProto.DOUBLE)
        codes = graph.node("ReduceSum", [flags, axis], keepdims=1)
        nan = graph.constant(TensorProto.DOUBLE, [np.nan], [])
        graph.node("Where", [is_missing, nan, codes], output)
        return
    flags = graph.node("Cast", [at_or_above], to=TensorProto.INT64)
    codes = graph.node("ReduceSum", [flags, axis], keepdims=1)
    # The labels by code, then the missing token at the index after the last code.
    labels = [*bin_labels(edges), MISSING_CATEGORY]
    missing_code = graph.constant(TensorProto.INT64, [len(labels) - 1], [])
    codes = graph.node("Where", [is_missing, missing_code, codes])
    label_table = graph.constant(TensorProto.STRING, [t.encode() for t in labels], [len(labels)])
    graph.node("Gather", [label_table, codes], output, axis=0)


def one_hot_shape(operator) -> None:
    """Output of OneHotEncoder: skl2onnx's own shape, or with rare grouping one column per
    frequent category and one for the infrequent ones (where a column has any)."""
    from skl2onnx.common.data_types import FloatTensorType, Int64TensorType
    from skl2onnx.shape_calculators.one_hot_encoder import (
        calculate_sklearn_one_hot_encoder_output_shapes,
    )

    encoder = operator.raw_operator
    if not getattr(encoder, "_infrequent_enabled", False):
        calculate_sklearn_one_hot_encoder_output_shapes(operator)
        return
    width = sum(len(_one_hot_columns(encoder, i)) for i in range(len(encoder.categories_)))
    rows = operator.inputs[0].get_first_dimension()
    integer = np.issubdtype(encoder.dtype, np.signedinteger)
    operator.outputs[0].type = (Int64TensorType if integer else FloatTensorType)([rows, width])


def _one_hot_columns(encoder, index: int) -> np.ndarray:
    return encoder._compute_transformed_categories(index)


def convert_one_hot_encoder(scope, operator, container) -> None:
    """OneHotEncoder: with rare grouping (min_frequency or max_categories) the graph of the
    module docstring; without, skl2onnx's own converter."""
    from onnx import TensorProto
    from skl2onnx.common.data_types import StringTensorType
    from skl2onnx.operator_converters.one_hot_encoder import convert_sklearn_one_hot_encoder

    encoder = operator.raw_operator
    if not getattr(encoder, "_infrequent_enabled", False):
        convert_sklearn_one_hot_encoder(scope, operator, container)
        return
    if encoder.handle_unknown not in ("infrequent_if_exist", "warn", "ignore"):
        raise NotImplementedError(
            f"OneHotEncoder with handle_unknown='{encoder.handle_unknown}' and rare grouping"
        )
    if getattr(encoder, "drop_idx_", None) is not None:
        raise NotImplementedError("OneHotEncoder with drop and rare grouping")
    if not all(isinstance(v.type, StringTensorType) for v in operator.inputs):
        raise NotImplementedError("OneHotEncoder with rare grouping on non-text columns")
    graph = _Graph(scope, container)
    # The encoder's columns, each as (input variable, position in it): a ColumnTransformer
    # hands a one-hot encoder its columns as separate inputs, not concatenated.
    sources = []
    for variable in operator.inputs:
        columns = variable.type.shape[1]
        if not isinstance(columns, int):
            raise NotImplementedError(f"OneHotEncoder input '{variable.raw_name}' of unknown width")
        sources += [(variable.full_name, position) for position in range(columns)]
    if len(sources) != len(encoder.categories_):
        raise NotImplementedError(
            f"OneHotEncoder fitted on {len(encoder.categories_)} columns, given {len(sources)}"
        )
    encoded = []
    for index, categories in enumerate(encoder.categories_):
        if not all(isinstance(c, str) for c in categories):
            raise NotImplementedError(
                f"OneHotEncoder with rare grouping: column {index} has categories that are not "
                "text (a missing value reaches the encoder as NaN)"
            )
        mapping = encoder._default_to_infrequent_mappings[index]
        width = len(_one_hot_columns(encoder, index))
        if mapping is None:  # no infrequent category in this column
            mapping, unseen = np.arange(len(categories)), -1
        else:
            infrequent = int(mapping.max())
            unseen = infrequent if encoder.handle_unknown != "ignore" else -1
        source, position = sources[index]
        column = graph.node(
            "Gather", [source, graph.constant(TensorProto.INT64, [position], [1])], axis=1
        )
        codes = graph.node(
            "LabelEncoder",
            [column],
            keys_strings=[str(c).encode() for c in categories],
            values_int64s=[int(m) for m in mapping],
            default_int64=unseen,
        )
        column_index = graph.constant(TensorProto.INT64, list(range(width)), [1, width])
        encoded.append(graph.node("Equal", [codes, column_index]))
    joined = encoded[0] if len(encoded) == 1 else graph.node("Concat", encoded, axis=1)
    output_type = operator.outputs[0].type.to_onnx_type().tensor_type.elem_type
    graph.node("Cast", [joined], operator.outputs[0].full_name, to=output_type)
