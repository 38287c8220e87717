"""Small hostile ONNX models, built in code (onnx.helper) so the corpus needs no binary files.

Each builder returns a ModelProto; the corpus (corpus.py) writes them into a test's tmp_path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def _model(graph: onnx.GraphProto, opsets: dict[str, int] | None = None, ir_version: int = 8) -> onnx.ModelProto:
    imports = [helper.make_opsetid(domain, version) for domain, version in (opsets or {"": OPSET}).items()]
    model = helper.make_model(graph, opset_imports=imports, producer_name="fimaudit-hostile")
    model.ir_version = ir_version
    return model


def linear(features: int = 4, classes: int = 3, seed: int = 0, weight: np.ndarray | None = None) -> onnx.ModelProto:
    """logits = x W: the smallest well-formed classifier (input 'x' [N, features])."""
    if weight is None:
        weight = np.random.default_rng(seed).standard_normal((features, classes)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["logits"], name="fc")],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", features])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
        [numpy_helper.from_array(weight.astype(np.float32), "W")],
    )
    return _model(graph)


def with_external_weight(location: str, features: int = 4, classes: int = 3) -> onnx.ModelProto:
    """``linear`` whose weight claims to live in the external file ``location``."""
    model = linear(features, classes)
    weight = model.graph.initializer[0]
    weight.ClearField("raw_data")
    weight.ClearField("float_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(features * classes * 4))):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    return model


def custom_op() -> onnx.ModelProto:
    """A node of an unknown custom domain: valid ONNX, but no runtime has a kernel for it."""
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["h"], name="fc"),
            helper.make_node("FancyActivation", ["h"], ["logits"], name="fancy", domain="com.example.secret"),
        ],
        "custom",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(np.ones((4, 3), np.float32), "W")],
    )
    return _model(graph, {"": OPSET, "com.example.secret": 1})


def opset_too_new(opset: int = 99) -> onnx.ModelProto:
    """``linear`` importing a default-domain opset no released onnx knows."""
    model = linear()
    model.opset_import[0].version = opset
    return model


def huge_input() -> onnx.ModelProto:
    """An input declared [N, 3, 100000, 100000]: 120 GB per sample in float32."""
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["x"], ["m"], name="pool", axes=[2, 3], keepdims=0),
            helper.make_node("Identity", ["m"], ["logits"], name="head"),
        ],
        "huge",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 100000, 100000])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
    )
    return _model(graph)


def wide_input(features: int = 4096, classes: int = 10) -> onnx.ModelProto:
    """A linear classifier with a moderately wide input (for memory-budget cases)."""
    return linear(features, classes)


def quantized() -> onnx.ModelProto:
    """float x -> QuantizeLinear -> QLinearMatMul (uint8) -> DequantizeLinear -> logits."""
    rng = np.random.default_rng(0)
    weight = rng.integers(0, 255, size=(4, 3), dtype=np.uint8)
    inits = [
        numpy_helper.from_array(np.array(0.05, np.float32), "x_scale"),
        numpy_helper.from_array(np.array(128, np.uint8), "x_zero"),
        numpy_helper.from_array(weight, "W_q"),
        numpy_helper.from_array(np.array(0.02, np.float32), "w_scale"),
        numpy_helper.from_array(np.array(128, np.uint8), "w_zero"),
        numpy_helper.from_array(np.array(0.1, np.float32), "y_scale"),
        numpy_helper.from_array(np.array(128, np.uint8), "y_zero"),
    ]
    graph = helper.make_graph(
        [
            helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["x_q"], name="quantize"),
            helper.make_node(
                "QLinearMatMul",
                ["x_q", "x_scale", "x_zero", "W_q", "w_scale", "w_zero", "y_scale", "y_zero"],
                ["y_q"],
                name="qmatmul",
            ),
            helper.make_node("DequantizeLinear", ["y_q", "y_scale", "y_zero"], ["logits"], name="dequantize"),
        ],
        "quantized",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        inits,
    )
    return _model(graph)


def token_ids() -> onnx.ModelProto:
    """int64 token ids -> embedding Gather -> mean -> linear head: a text classifier."""
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["embedding.weight", "input_ids"], ["embedded"], name="token_embedding", axis=0),
            helper.make_node("ReduceMean", ["embedded"], ["pooled"], name="pool", axes=[1], keepdims=0),
            helper.make_node("MatMul", ["pooled", "W"], ["logits"], name="head"),
        ],
        "text",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["N", 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])],
        [
            numpy_helper.from_array(rng.standard_normal((100, 16)).astype(np.float32), "embedding.weight"),
            numpy_helper.from_array(rng.standard_normal((16, 2)).astype(np.float32), "W"),
        ],
    )
    return _model(graph)


def two_inputs() -> onnx.ModelProto:
    """logits = x W + bias_in: a data input 'x' [N, 4] and a second float input 'bias_in' [N, 3]."""
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["h"], name="fc"),
            helper.make_node("Add", ["h", "bias_in"], ["logits"], name="add"),
        ],
        "two_inputs",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4]),
            helper.make_tensor_value_info("bias_in", TensorProto.FLOAT, ["N", 3]),
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(np.ones((4, 3), np.float32), "W")],
    )
    return _model(graph)


def subnormal_weights(features: int = 4, classes: int = 3) -> onnx.ModelProto:
    """``linear`` whose weight holds subnormal float32 values next to normal ones."""
    weight = np.random.default_rng(0).standard_normal((features, classes)).astype(np.float32)
    weight[0, :] = np.float32(1e-40)
    return linear(features, classes, weight=weight)


ZIPMAP_FILE = Path(__file__).resolve().parent / "files" / "zipmap_logreg.onnx"


def zipmap_model() -> onnx.ModelProto:
    """skl2onnx's default export of a tiny LogisticRegression: a ZipMap output (a kept file).

    Kept as a file because skl2onnx and scikit-learn are not test dependencies; rebuild it with
    ``python -m tests.hostile.files.build_files``.
    """
    return onnx.load(ZIPMAP_FILE)


def build_zipmap_model() -> onnx.ModelProto:
    """Convert a tiny LogisticRegression with skl2onnx's defaults (ZipMap probabilities)."""
    import warnings

    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    features = rng.standard_normal((30, 4)).astype(np.float32)
    labels = (features[:, 0] > 0).astype(np.int64) + (features[:, 1] > 0).astype(np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        classifier = LogisticRegression(max_iter=200).fit(features, labels)
        return to_onnx(classifier, features[:1], target_opset={"": 17, "ai.onnx.ml": 3})


# --- external data in every place a tensor can hide (confinement cases) -------------------------

ESCAPE_PLACES = (
    "initializer",
    "sparse-values",
    "sparse-indices",
    "sparse-constant",
    "if-subgraph",
    "loop-subgraph",
    "function",
    "function-subgraph",
    "training-info",
)


def _external(tensor: onnx.TensorProto, location: str, length: int) -> onnx.TensorProto:
    """``tensor`` with its bytes claimed to live in ``location`` (offset 0, ``length`` bytes)."""
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.ClearField("int64_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def _external_floats(name: str, location: str, count: int = 3) -> onnx.TensorProto:
    return _external(numpy_helper.from_array(np.zeros(count, np.float32), name), location, 4 * count)


def _branch(name: str, tensor: onnx.TensorProto | None, as_initializer: bool) -> onnx.GraphProto:
    """A subgraph with no inputs whose one output is ``tensor`` (an initializer or a Constant)."""
    tensor = tensor if tensor is not None else numpy_helper.from_array(np.zeros(3, np.float32), f"{name}_value")
    if as_initializer:
        nodes = [helper.make_node("Identity", [tensor.name], [f"{name}_out"], name=f"{name}_identity")]
        inits = [tensor]
    else:
        nodes = [helper.make_node("Constant", [], [f"{name}_out"], name=f"{name}_constant", value=tensor)]
        inits = []
    return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, [3])], inits)


def external_escape(place: str, location: str) -> onnx.ModelProto:
    """``linear`` plus one extra tensor, at ``place``, whose bytes are claimed to be in ``location``.

    Every place is one that ``onnx.external_data_helper`` does not walk (or walks: the plain
    initializer and the If/Loop subgraphs are controls for the same check).
    """
    model = linear()
    graph = model.graph
    opsets: dict[str, int] = {"": OPSET}
    if place == "initializer":
        graph.initializer.append(_external_floats("hidden", location))
    elif place in ("sparse-values", "sparse-indices"):
        values = numpy_helper.from_array(np.ones(2, np.float32), "hidden_values")
        indices = numpy_helper.from_array(np.array([0, 5], np.int64), "hidden_indices")
        if place == "sparse-values":
            _external(values, location, 8)
        else:
            _external(indices, location, 16)
        graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, [4, 3]))
    elif place == "sparse-constant":
        values = _external(numpy_helper.from_array(np.ones(2, np.float32), "hidden_values"), location, 8)
        indices = numpy_helper.from_array(np.array([0, 5], np.int64), "hidden_indices")
        graph.node.append(helper.make_node(
            "Constant", [], ["hidden"], name="hidden_constant", sparse_value=helper.make_sparse_tensor(values, indices, [4, 3])
        ))
    elif place == "if-subgraph":
        graph.initializer.append(numpy_helper.from_array(np.array(True), "cond"))
        graph.node.append(helper.make_node(
            "If", ["cond"], ["hidden"], name="hidden_if",
            then_branch=_branch("then", _external_floats("hidden", location), True),
            else_branch=_branch("else", None, True),
        ))
    elif place == "loop-subgraph":
        body = helper.make_graph(
            [helper.make_node("Identity", ["cond_in"], ["cond_out"], name="keep_going"),
             helper.make_node("Identity", ["hidden"], ["scan_out"], name="emit")],
            "body",
            [helper.make_tensor_value_info("i", TensorProto.INT64, []),
             helper.make_tensor_value_info("cond_in", TensorProto.BOOL, [])],
            [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
             helper.make_tensor_value_info("scan_out", TensorProto.FLOAT, [3])],
            [_external_floats("hidden", location)],
        )
        graph.initializer.extend([numpy_helper.from_array(np.array(1, np.int64), "trips"),
                                  numpy_helper.from_array(np.array(True), "cond")])
        graph.node.append(helper.make_node("Loop", ["trips", "cond"], ["hidden_scan"], name="hidden_loop", body=body))
    elif place in ("function", "function-subgraph"):
        if place == "function":
            body = [helper.make_node("Constant", [], ["out"], name="hidden_constant", value=_external_floats("hidden", location))]
        else:
            body = [
                helper.make_node("Constant", [], ["c"], name="c", value=numpy_helper.from_array(np.array(True), "c")),
                helper.make_node("If", ["c"], ["out"], name="hidden_if",
                                 then_branch=_branch("then", _external_floats("hidden", location), False),
                                 else_branch=_branch("else", None, False)),
            ]
        function = helper.make_function("local", "hide", [], ["out"], body, [helper.make_opsetid("", OPSET)])
        model.functions.append(function)
        graph.node.append(helper.make_node("hide", [], ["hidden"], name="call_hide", domain="local"))
        opsets["local"] = 1
    elif place == "training-info":
        info = model.training_info.add()
        info.initialization.CopyFrom(_branch("init", _external_floats("hidden", location), True))
    else:
        raise ValueError(f"unknown place {place!r}")
    if "local" in opsets:
        model.opset_import.append(helper.make_opsetid("local", 1))
    return model


def declared_external(location: str, elements: int, length: int | None = None) -> onnx.ModelProto:
    """``linear`` whose weight claims ``elements`` float32 values in ``length`` bytes of ``location``."""
    model = linear()
    weight = model.graph.initializer[0]
    del weight.dims[:]
    weight.dims.append(elements)
    _external(weight, location, 4 * elements if length is None else length)
    return model


def hostile_names(payload: str) -> onnx.ModelProto:
    """``linear`` whose input, output, node names, producer, doc string and metadata carry ``payload``."""
    x, logits = f"x{payload}", f"logits{payload}"
    graph = helper.make_graph(
        [helper.make_node("MatMul", [x, "W"], [logits], name=f"fc{payload}")],
        f"graph{payload}",
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info(logits, TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32), "W")],
    )
    model = _model(graph)
    model.producer_name = f"producer{payload}"
    model.doc_string = f"doc{payload}"
    helper.set_model_props(model, {f"key{payload}": f"value{payload}"})
    return model
