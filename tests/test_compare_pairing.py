"""fimaudit compare on real variants of one network (issue 17): pairing, agreement, honest status.

Models: the exporter corpus's TorchScript CNN (tests/corpus/torch_ts_resnet.onnx) and its dynamo
twin (tests/models/compare/torch_dynamo_resnet.onnx, tools/compare_twins.py: the same network and
weights, 4 more constant values, batch fixed to 1); variants built here in code with onnx.helper:
an NHWC twin (a Transpose at the input), a float16 twin (every weight stored as float16 and cast
back by a Cast node, as onnx's float16 converters do with keep_io_types), a copy with one weight
tensor scaled, a weight-only int8 (QDQ) MLP, and a 3-class model on the same input.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from fimaudit.audit import AuditConfig
from fimaudit.cli import main
from fimaudit.compare import EXPECTED_RTOL, LAMBDA_FLOOR, check_consistency, layout_for
from fimaudit.compare_audit import run_comparison
from fimaudit.errors import InputError
from tests.conftest import SAMPLES

ROOT = Path(__file__).resolve().parents[1]
TS = ROOT / "tests" / "corpus" / "torch_ts_resnet.onnx"
DYNAMO = ROOT / "tests" / "models" / "compare" / "torch_dynamo_resnet.onnx"
IMAGES = ROOT / "tests" / "corpus" / "torch_ts_resnet_x.npy"
MLP = SAMPLES / "mlp.onnx"
DIGITS = SAMPLES / "digits_test.npy"

pytestmark = pytest.mark.skipif(not TS.exists() or not DYNAMO.exists(), reason="exporter corpus not present")


def compare(*args: str) -> tuple[int, dict, str]:
    """Run ``fimaudit compare`` and return its exit code, JSON document and output."""
    out = Path(args[-1])
    result = CliRunner().invoke(main, ["compare", *args[:-1], "--json", str(out)])
    document = json.loads(out.read_text()) if out.exists() else {}
    return result.exit_code, document, result.output


def nhwc_twin(path: Path) -> onnx.ModelProto:
    """``path``'s model taking NHWC input: a Transpose (0, 3, 1, 2) in front of the NCHW graph."""
    model = onnx.load(str(path))
    graph = model.graph
    old = graph.input[0]
    dims = old.type.tensor_type.shape.dim
    n, c, h, w = [d.dim_param or d.dim_value for d in dims]
    graph.input.remove(old)
    graph.input.insert(0, helper.make_tensor_value_info("input_nhwc", TensorProto.FLOAT, [n, h, w, c]))
    graph.node.insert(0, helper.make_node("Transpose", ["input_nhwc"], [old.name], perm=[0, 3, 1, 2], name="to_nchw"))
    return model


def float16_twin(path: Path) -> onnx.ModelProto:
    """Every float weight stored as float16 and cast back to float32 where it is read."""
    model = onnx.load(str(path))
    graph = model.graph
    casts = []
    for tensor in list(graph.initializer):
        if tensor.data_type != TensorProto.FLOAT:
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float16), tensor.name + "_fp16")
        graph.initializer.remove(tensor)
        graph.initializer.append(half)
        casts.append(helper.make_node("Cast", [half.name], [tensor.name], to=TensorProto.FLOAT, name=tensor.name + "_cast"))
    for node in reversed(casts):
        graph.node.insert(0, node)
    return model


def scaled_copy(path: Path, name: str, factor: float) -> onnx.ModelProto:
    """``path``'s model with the weight tensor ``name`` multiplied by ``factor``."""
    model = onnx.load(str(path))
    (tensor,) = [t for t in model.graph.initializer if t.name == name]
    tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor) * np.float32(factor), name))
    return model


def int8_weight_twin(path: Path) -> onnx.ModelProto:
    """Weight-only int8 quantisation (QDQ): each Gemm weight as int8 + DequantizeLinear."""
    model = onnx.load(str(path))
    graph = model.graph
    nodes = []
    for tensor in list(graph.initializer):
        values = numpy_helper.to_array(tensor)
        if values.ndim != 2:
            continue
        scale = np.float32(np.abs(values).max() / 127)
        quantised = np.clip(np.round(values / scale), -127, 127).astype(np.int8)
        graph.initializer.remove(tensor)
        graph.initializer.extend([numpy_helper.from_array(quantised, tensor.name + "_q"),
                                  numpy_helper.from_array(np.array(scale, dtype=np.float32), tensor.name + "_scale")])
        nodes.append(helper.make_node("DequantizeLinear", [tensor.name + "_q", tensor.name + "_scale"], [tensor.name]))
    for node in reversed(nodes):
        graph.node.insert(0, node)
    return model


def three_classes() -> onnx.ModelProto:
    """A linear 3-class model on the digits' [1, 8, 8] input (not comparable with 10-class models)."""
    weight = np.random.default_rng(0).standard_normal((64, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["logits"])],
        "three", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])], [numpy_helper.from_array(weight, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def save(model: onnx.ModelProto, folder: Path, name: str) -> str:
    onnx.checker.check_model(model)
    path = folder / name
    onnx.save(model, str(path))
    return str(path)


def test_layouts_are_channel_moves_only() -> None:
    assert layout_for([3, 16, 16], [16, 16, 3]).name == "NCHW -> NHWC"
    assert layout_for([16, 16, 3], [16, "w", 3]) is None, "a symbolic dim fits as it is"
    assert layout_for([16, 16, 3], [3, 16, 16]).name == "NHWC -> NCHW"
    assert layout_for([3, 16, 16], [3, 16, 16]) is None
    assert layout_for([64], [64]) is None and layout_for([3, 16, 8], [16, 3, 8]) is None


def test_torchscript_and_dynamo_exports_of_one_cnn_are_paired_and_agree(tmp_path) -> None:
    code, document, output = compare(str(TS), str(DYNAMO), "--data", str(IMAGES), str(tmp_path / "c.json"))
    assert code == 0, output
    (pair,) = document["agreement"]["pairs"]
    assert pair["status"] == "agree" and pair["fraction_agreeing"] == 1.0 and pair["same_predicted_class"] == 4
    assert pair["max_relative_difference"] < 1e-4
    # Shown as evidence, not a gate: the dynamo export carries 4 more constant values.
    assert pair["evidence"]["parameter_count"] == [1714, 1718]
    assert any("GlobalAveragePool" in cause and "ReduceMean" in cause for cause in pair["expected_deviations"])
    assert document["consistency"] == {**document["consistency"], "status": "agree", "mode": "auto", "passed": True}
    assert "AGREE" in output


def test_an_nhwc_twin_is_paired_with_its_nchw_twin_and_agrees(tmp_path) -> None:
    nhwc = save(nhwc_twin(TS), tmp_path, "resnet_nhwc.onnx")
    code, document, output = compare(nhwc, str(TS), "--data", str(IMAGES), "--reference", str(TS), str(tmp_path / "c.json"))
    assert code == 0, output
    first = document["models"][0]
    assert first["layout"] == {"permutation": [1, 2, 0], "name": "NCHW -> NHWC"}
    assert first["facts"]["data_shape"] == [3, 16, 16] and first["audit"]["data"]["sample_shape"] == [16, 16, 3]
    assert "permuted NCHW -> NHWC" in first["audit"]["data"]["source"] and "torch_ts_resnet_x.npy" in first["audit"]["data"]["source"]
    assert "data permuted NCHW -> NHWC" in output
    (pair,) = document["agreement"]["pairs"]
    assert (pair["a"], pair["b"]) == ("torch_ts_resnet.onnx", "resnet_nhwc.onnx")
    assert pair["status"] == "agree" and pair["max_relative_difference"] < 1e-4
    assert document["consistency"]["mode"] == "reference" and document["consistency"]["status"] == "agree"


def test_a_float16_variant_agrees_within_the_stated_looser_tolerance(tmp_path) -> None:
    half = save(float16_twin(TS), tmp_path, "resnet_fp16.onnx")
    code, document, output = compare(str(TS), half, "--data", str(IMAGES), "--reference", "torch_ts_resnet.onnx",
                                     str(tmp_path / "c.json"))
    assert code == 0, output
    (pair,) = document["agreement"]["pairs"]
    assert pair["status"] == "agree"
    assert pair["rtol"] == EXPECTED_RTOL["float16"] and "float16" in pair["rtol_reason"]
    assert any("float16 weight" in cause for cause in pair["expected_deviations"])
    # float16 weights really move lambda_max, by far less than the stated tolerance (measured ~1e-3).
    assert 1e-6 < pair["max_relative_difference"] < EXPECTED_RTOL["float16"] / 5


def test_a_copy_with_one_weight_tensor_scaled_disagrees_and_exits_1(tmp_path) -> None:
    changed = save(scaled_copy(TS, "onnx::Conv_50", 1.5), tmp_path, "resnet_scaled.onnx")
    code, document, output = compare(str(TS), changed, "--data", str(IMAGES), "--reference", str(TS), str(tmp_path / "c.json"))
    assert code == 1, output
    (pair,) = document["agreement"]["pairs"]
    assert pair["status"] == "disagree" and pair["fraction_agreeing"] < 1.0
    assert pair["max_relative_difference"] > 1e-2 and pair["expected_deviations"] == []
    worst = pair["worst_samples"][0]
    assert worst["index"] == pair["worst_sample"] and not worst["agree"] and "lambda_max" in worst["why"]
    assert document["consistency"]["status"] == "disagree" and document["consistency"]["passed"] is False
    assert "DISAGREE" in output


def test_a_quantised_model_goes_through_finite_differences_with_the_method_stated(tmp_path) -> None:
    int8 = save(int8_weight_twin(MLP), tmp_path, "mlp_int8.onnx")
    comparison = run_comparison([str(MLP), int8], AuditConfig(model_path="", data_path=str(DIGITS), samples=6))
    base, quantised = comparison.outcomes
    assert base.result.gradients == "graph" and base.note == ""
    assert quantised.result.gradients == "fd" and "finite differences" in quantised.note and "DequantizeLinear" in quantised.note
    consistency = check_consistency(comparison.outcomes, reference=str(MLP))
    (pair,) = consistency.pairs
    assert pair.rtol == EXPECTED_RTOL["quantised"] and any("quantised" in cause for cause in pair.expected)
    assert pair.status == "agree", pair.reason


def test_saturated_samples_do_not_decide() -> None:
    """lambda_max far below the largest is compared on the floor's scale, not its own."""
    from fimaudit.compare import _agree_samples

    class Sample:
        def __init__(self, index: int, value: float) -> None:
            self.index, self.value, self.predicted_class, self.top_prob = index, value, 0, 0.9

    class Audit:
        def __init__(self, values: list[float]) -> None:
            self.samples = tuple(Sample(i, v) for i, v in enumerate(values))

    samples, floor = _agree_samples(Audit([1.0, 1e-13]), Audit([1.0, 3e-13]), 1e-2)
    assert floor == LAMBDA_FLOOR and all(s.agree for s in samples)
    samples, _ = _agree_samples(Audit([1.0, 0.5]), Audit([1.0, 0.6]), 1e-2)
    assert not samples[1].agree


def test_a_requested_check_that_cannot_be_made_is_not_checked_and_exits_1(tmp_path) -> None:
    other = save(three_classes(), tmp_path, "three.onnx")
    code, document, output = compare(str(MLP), other, "--data", str(DIGITS), "--samples", "3", "--reference", str(MLP),
                                     str(tmp_path / "c.json"))
    assert code == 1, output
    (pair,) = document["agreement"]["pairs"]
    assert pair["status"] == "not_checked" and "different numbers of classes" in pair["reason"]
    assert document["consistency"]["status"] == "not_checked" and document["consistency"]["requested"] is True
    # Not asked: nothing comparable is "not checked", never "consistent", and exits 0.
    code, document, output = compare(str(MLP), other, "--data", str(DIGITS), "--samples", "3", str(tmp_path / "d.json"))
    assert code == 0, output
    assert document["consistency"]["status"] == "not_checked" and document["agreement"]["pairs"] == []
    assert "NOT CHECKED" in output


def test_unknown_reference_or_group_is_a_usage_error(tmp_path) -> None:
    for option in (["--reference", "nope.onnx"], ["--group", "mlp.onnx"], ["--group", "mlp.onnx,nope.onnx"]):
        result = CliRunner().invoke(main, ["compare", str(MLP), str(DYNAMO), "--data", str(DIGITS), *option])
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output
    with pytest.raises(InputError):
        check_consistency([], min_agreement=0.0)
