"""The Fisher bounds on every sample model: family recognised, and bound >= exact lambda_max.

Two exact references, both compared without any tolerance:
- the audit's own ``exact`` lambda_max (K x K eigenproblem of the Jacobian the audit uses);
- an independent float64 lambda_max (the logits model run in double by onnx's reference
  runtime, central differences with error ~1e-9), on a few samples per model.
A violation of either is a bug in a bound, never noise: the per-sample bounds exceed the exact
values by a factor of at least 1.8 on these models (tightness ratios are printed in the report).
"""

from __future__ import annotations

import numpy as np
import pytest

from fimaudit.audit import AuditConfig, run_audit
from fimaudit.graph.selection import LOGITS
from fimaudit.report.document import build_document
from tests.bounds.reference64 import Reference64
from tests.conftest import SAMPLES, sample_manifest

MODELS = sample_manifest()
AUDITED_SAMPLES = 16
FLOAT64_SAMPLES = 3
_AUDITS: dict[str, object] = {}


def audit(entry: dict):
    if entry["file"] not in _AUDITS:
        config = AuditConfig(
            model_path=str(SAMPLES / entry["file"]),
            data_path=str(SAMPLES / "digits_test.npy"),
            samples=AUDITED_SAMPLES,
            method="exact",
            gradients="fd",
        )
        _AUDITS[entry["file"]] = run_audit(config)
    return _AUDITS[entry["file"]]


@pytest.mark.parametrize("entry", MODELS, ids=[m["file"] for m in MODELS])
def test_family_is_recognised(entry: dict) -> None:
    result = audit(entry)
    assert result.architecture["family"] == entry["family"]
    assert result.bound.details["family"] == entry["family"]
    if entry["family"] != "mlp":
        assert result.architecture["blocks"], "blocks of the recognised family are listed"


@pytest.mark.parametrize("entry", MODELS, ids=[m["file"] for m in MODELS])
def test_bounds_are_above_the_audited_lambda_max(entry: dict) -> None:
    result = audit(entry)
    bound = result.bound.value
    assert bound is not None, result.bound.reason
    for sample in result.samples:
        assert sample.bound.value is not None
        assert sample.bound.value >= sample.result.value
        assert bound >= sample.result.value
        assert sample.bound.value <= bound, "a per-sample bound never exceeds the global one"


@pytest.mark.slow
@pytest.mark.parametrize("entry", MODELS, ids=[m["file"] for m in MODELS])
def test_bounds_are_above_the_float64_lambda_max(entry: dict) -> None:
    result = audit(entry)
    prepared = result.prepared
    reference = Reference64(prepared.logits_model, prepared.selection.input_name, LOGITS,
                            batch_one=prepared.selection.fixed_batch is not None)
    for sample in result.samples[:FLOAT64_SAMPLES]:
        exact = reference.lambda_max(result.data.inputs[sample.index])
        assert np.isclose(exact, sample.result.value, rtol=0.05, atol=1e-6), "the float64 reference agrees with the audit"
        assert sample.bound.value >= exact
        assert result.bound.value >= exact


@pytest.mark.parametrize("entry", MODELS[:1] + [m for m in MODELS if m["family"] == "resnet"], ids=lambda m: m["file"])
def test_document_carries_the_bounds(entry: dict) -> None:
    document = build_document(audit(entry))
    bound = document["bound"]
    assert bound["kind"] == "upper_bound"
    assert bound["per_layer"] and all({"node", "op", "gain", "lipschitz", "method"} <= set(layer) for layer in bound["per_layer"])
    assert bound["per_layer"][-1]["lipschitz"] == pytest.approx(bound["lipschitz"])
    assert bound["per_sample"]["tightness"]["min"] >= 1.0
    for sample in document["samples"]:
        assert sample["bound"]["kind"] == "upper_bound"
        assert sample["bound"]["tightness"] == pytest.approx(sample["bound"]["value"] / sample["lambda_max"])
    assert document["architecture"]["family"] == entry["family"]


def test_overflowing_bounds_are_null_not_infinite() -> None:
    """A deep enough product overflows float64: the JSON says null with a reason, never Infinity."""
    import json

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from fimaudit.bounds.fisher_bound import FisherBounds

    nodes, inits, current = [], [], "x"
    for layer in range(40):
        inits.append(numpy_helper.from_array((np.eye(4) * 1e9).astype(np.float32), f"W{layer}"))
        nodes.append(helper.make_node("MatMul", [current, f"W{layer}"], [f"h{layer}"]))
        current = f"h{layer}"
    graph = helper.make_graph(nodes, "deep", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info(current, TensorProto.FLOAT, [1, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    bounds = FisherBounds(model, "x", current, (4,), 4)
    result = bounds.global_bound()
    assert result.value is None and "floating-point range" in result.reason
    json.dumps(result.to_dict(), allow_nan=False)
    sample = bounds.sample_bound(np.ones(4, np.float32), np.zeros(4))
    assert sample.value is None
    json.dumps(sample.to_dict(), allow_nan=False)


def test_a_model_whose_rules_read_no_activation_is_bounded_per_sample_without_a_probe_run() -> None:
    """ReLU networks: the per-sample bound is the same without the probe session (none is built).

    A model with a value-reading op (the Gemm of two activations below) still probes, and its
    per-sample bound depends on the sample's activations.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from fimaudit.bounds.fisher_bound import FisherBounds

    rng = np.random.default_rng(0)
    w1, w2 = rng.normal(size=(6, 8)).astype(np.float32), rng.normal(size=(8, 3)).astype(np.float32)

    def model(squared: bool) -> onnx.ModelProto:
        nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"]), helper.make_node("Relu", ["h"], ["r"])]
        if squared:
            nodes += [helper.make_node("Mul", ["r", "r"], ["s"]), helper.make_node("MatMul", ["s", "W2"], ["y"])]
        else:
            nodes.append(helper.make_node("MatMul", ["r", "W2"], ["y"]))
        graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
                                  [numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(w2, "W2")])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    x = rng.normal(size=6).astype(np.float32)
    logits = rng.normal(size=3)
    relu = FisherBounds(model(False), "x", "y", (6,), 3)
    skipped = relu.sample_bound(x, logits)
    assert relu._probe is None
    forced = FisherBounds(model(False), "x", "y", (6,), 3)
    forced._reads_activations = True
    assert forced.sample_bound(x, logits).value == skipped.value and forced._probe is not None

    squared = FisherBounds(model(True), "x", "y", (6,), 3)
    small, large = squared.sample_bound(0.01 * x, logits), squared.sample_bound(10 * x, logits)
    assert squared._probe is not None
    assert small.value is not None and large.value is not None and small.value < large.value

    # The global stage (on its thread beside the samples) prepares what the first sample bound
    # would: the probe session only where a rule reads activations.
    from fimaudit.bounds.fisher_bound import global_stage

    for squares, probed in ((False, False), (True, True)):
        stage = global_stage(model(squares), "x", "y", x, 3)
        assert stage.bounds._reads_activations is probed
        assert (stage.bounds._probe is not None) is probed
        sample = stage.bounds.sample_bound(x, logits)
        assert sample.value is not None
        if not squares:
            assert sample.value == skipped.value
