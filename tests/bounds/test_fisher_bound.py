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
