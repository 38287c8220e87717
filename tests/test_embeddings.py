"""--wrt embeddings (issue 16 item 8): token-id models audited in embedding space, end to end.

Tiny BERT-like graphs are built here with onnx.helper (word/position/type Gathers, Add,
LayerNormalization, one attention layer with an additive mask, CLS pooling, Gemm head); the
DistilBERT-like variant has no token types and masks with Where. References are float64: the same
graph built in double, run by onnx's ReferenceEvaluator, differentiated by central differences.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from fimaudit.cli import main
from fimaudit.graph.embeddings import EMBEDDINGS, find_embedding_site, rewrite_at

VOCAB, LENGTH, HIDDEN, CLASSES = 12, 6, 8, 3


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(array, name)


def build_bert(dtype: type = np.float32, token_types: bool = True, seed: int = 0) -> onnx.ModelProto:
    """A one-layer BERT-like classifier on input_ids / attention_mask (/ token_type_ids)."""
    rng = np.random.default_rng(seed)
    f = lambda *shape, scale=0.5: (rng.standard_normal(shape) * scale).astype(dtype)  # noqa: E731
    elem = TensorProto.FLOAT if dtype == np.float32 else TensorProto.DOUBLE
    inits = [
        _init("word", f(VOCAB, HIDDEN)), _init("pos", f(LENGTH, HIDDEN)), _init("position_ids", np.arange(LENGTH, dtype=np.int64)),
        _init("gamma", (1 + f(HIDDEN, scale=0.1)).astype(dtype)), _init("beta", f(HIDDEN, scale=0.1)),
        _init("wq", f(HIDDEN, HIDDEN)), _init("wk", f(HIDDEN, HIDDEN)), _init("wv", f(HIDDEN, HIDDEN)),
        _init("scale", np.array(1 / np.sqrt(HIDDEN), dtype=dtype)), _init("one", np.array(1, dtype=dtype)),
        _init("big", np.array(-1e4, dtype=dtype)), _init("cls", np.array(0, dtype=np.int64)),
        _init("wh", f(HIDDEN, CLASSES)), _init("bh", f(CLASSES, scale=0.1)), _init("axes1", np.array([1], dtype=np.int64)),
        _init("zero_i", np.array(0, dtype=np.int64)),
    ]
    nodes = [
        helper.make_node("Gather", ["word", "input_ids"], ["w_emb"], name="word_lookup"),
        helper.make_node("Gather", ["pos", "position_ids"], ["p_emb"], name="position_lookup"),
    ]
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", LENGTH]),
              helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", LENGTH])]
    if token_types:
        inits.append(_init("types", f(2, HIDDEN)))
        inputs.append(helper.make_tensor_value_info("token_type_ids", TensorProto.INT64, ["batch", LENGTH]))
        nodes += [
            helper.make_node("Gather", ["types", "token_type_ids"], ["t_emb"], name="type_lookup"),
            helper.make_node("Add", ["w_emb", "t_emb"], ["wt"], name="add_types"),
            helper.make_node("Add", ["wt", "p_emb"], ["emb"], name="add_positions"),
        ]
    else:
        nodes.append(helper.make_node("Add", ["w_emb", "p_emb"], ["emb"], name="add_positions"))
    nodes += [
        helper.make_node("LayerNormalization", ["emb", "gamma", "beta"], ["h0"], axis=-1, epsilon=1e-5),
        helper.make_node("MatMul", ["h0", "wq"], ["q"]), helper.make_node("MatMul", ["h0", "wk"], ["k"]),
        helper.make_node("MatMul", ["h0", "wv"], ["v"]),
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["s0"]), helper.make_node("Mul", ["s0", "scale"], ["s1"]),
    ]
    if token_types:  # BERT: additive mask (1 - m) * -1e4
        nodes += [
            helper.make_node("Cast", ["attention_mask"], ["m"], to=elem),
            helper.make_node("Sub", ["one", "m"], ["nm"]), helper.make_node("Mul", ["nm", "big"], ["madd"]),
            helper.make_node("Unsqueeze", ["madd", "axes1"], ["madd3"]),
            helper.make_node("Add", ["s1", "madd3"], ["s2"]),
        ]
    else:  # DistilBERT: Where(mask == 0, -1e4, scores)
        nodes += [
            helper.make_node("Equal", ["attention_mask", "zero_i"], ["pad"]),
            helper.make_node("Unsqueeze", ["pad", "axes1"], ["pad3"]),
            helper.make_node("Where", ["pad3", "big", "s1"], ["s2"]),
        ]
    nodes += [
        helper.make_node("Softmax", ["s2"], ["a"], axis=-1), helper.make_node("MatMul", ["a", "v"], ["ctx"]),
        helper.make_node("Add", ["h0", "ctx"], ["h1"]),
        helper.make_node("Gather", ["h1", "cls"], ["pooled"], axis=1),
        helper.make_node("Gemm", ["pooled", "wh", "bh"], ["logits"]),
    ]
    graph = helper.make_graph(nodes, "tiny_bert", inputs, [helper.make_tensor_value_info("logits", elem, ["batch", CLASSES])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="fimaudit-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def build_one_hot(dtype: type = np.float32, seed: int = 1) -> onnx.ModelProto:
    """ids [B, 4] in 0..4 one-hot encoded to [B, 4, 5], flattened, two Gemms with a Tanh."""
    rng = np.random.default_rng(seed)
    elem = TensorProto.FLOAT if dtype == np.float32 else TensorProto.DOUBLE
    inits = [
        _init("depth", np.array(5, dtype=np.int64)), _init("values", np.array([0, 1], dtype=dtype)),
        _init("w1", rng.standard_normal((20, 7)).astype(dtype)), _init("b1", rng.standard_normal(7).astype(dtype)),
        _init("w2", rng.standard_normal((7, CLASSES)).astype(dtype)), _init("b2", np.zeros(CLASSES, dtype=dtype)),
    ]
    nodes = [
        helper.make_node("OneHot", ["ids", "depth", "values"], ["hot"], axis=-1),
        helper.make_node("Flatten", ["hot"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "w1", "b1"], ["z1"]), helper.make_node("Tanh", ["z1"], ["a1"]),
        helper.make_node("Gemm", ["a1", "w2", "b2"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes, "one_hot", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 4])],
        [helper.make_tensor_value_info("logits", elem, ["batch", CLASSES])], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def token_data(token_types: bool = True, count: int = 4, seed: int = 3) -> dict[str, np.ndarray]:
    """Rows of ids with padding at the end (row i has LENGTH - i real tokens, at least 3)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, VOCAB, size=(count, LENGTH)).astype(np.int64)
    mask = np.ones((count, LENGTH), dtype=np.int64)
    for i in range(count):
        real = max(3, LENGTH - i)
        mask[i, real:] = 0
        ids[i, real:] = 0
    arrays = {"input_ids": ids, "attention_mask": mask}
    if token_types:
        types = np.zeros((count, LENGTH), dtype=np.int64)
        types[:, 3:] = 1
        arrays["token_type_ids"] = types * mask
    return arrays


def reference_embeddings(model64: onnx.ModelProto, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """The embedding sum of each sample, in float64, from the model's own tables."""
    tables = {init.name: numpy_helper.to_array(init) for init in model64.graph.initializer}
    emb = tables["word"][arrays["input_ids"]] + tables["pos"][None]
    if "token_type_ids" in arrays:
        emb = emb + tables["types"][arrays["token_type_ids"]]
    return emb


def reference_jacobian(rewritten64: onnx.ModelProto, sample: np.ndarray, feeds: dict[str, np.ndarray], step: float = 1e-6) -> np.ndarray:
    """[K, d] float64 central differences of the rewritten float64 graph (ReferenceEvaluator)."""
    session = ReferenceEvaluator(rewritten64)
    needed = {value.name for value in rewritten64.graph.input}
    extra = {name: value[None] for name, value in feeds.items() if name in needed}

    def logits(x: np.ndarray) -> np.ndarray:
        return session.run(None, {EMBEDDINGS: x[None], **extra})[0][0]

    flat = sample.reshape(-1)
    columns = []
    for j in range(flat.size):
        e = np.zeros_like(flat)
        e[j] = step
        columns.append((logits((flat + e).reshape(sample.shape)) - logits((flat - e).reshape(sample.shape))) / (2 * step))
    return np.stack(columns, axis=1)


def reference_lambda(jacobian: np.ndarray, logits: np.ndarray) -> float:
    p = np.exp(logits - logits.max())
    p /= p.sum()
    fisher = jacobian.T @ (np.diag(p) - np.outer(p, p)) @ jacobian
    return float(np.linalg.eigvalsh(fisher)[-1])


def _run(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(main, args)
    return result.exit_code, result.output


@pytest.mark.parametrize("token_types", [True, False], ids=["bert", "distilbert"])
def test_audit_in_embedding_space_matches_float64_reference(tmp_path, token_types):
    model_path = tmp_path / "bert.onnx"
    onnx.save(build_bert(np.float32, token_types), model_path)
    arrays = token_data(token_types)
    np.savez(tmp_path / "tokens.npz", **arrays)
    (tmp_path / "vocab.txt").write_text("".join(f"tok{i}\n" for i in range(VOCAB)))
    code, output = _run([
        "audit", str(model_path), "--wrt", "embeddings", "--data", str(tmp_path / "tokens.npz"), "--method", "exact",
        "--gradients", "graph", "--vocab", str(tmp_path / "vocab.txt"), "--json", str(tmp_path / "a.json"),
        "--report", str(tmp_path / "a.html"),
    ])
    assert code == 0, output
    document = json.loads((tmp_path / "a.json").read_text())
    assert document["data"]["wrt"] == "embeddings"
    assert document["model"]["input"]["name"] == EMBEDDINGS
    model64 = build_bert(np.float64, token_types)
    site = find_embedding_site(model64)
    rewritten64 = rewrite_at(model64, site)
    embeddings = reference_embeddings(model64, arrays)
    session = ReferenceEvaluator(rewritten64)
    for entry in document["samples"]:
        i = entry["index"]
        feeds = {"attention_mask": arrays["attention_mask"][i]}
        jacobian = reference_jacobian(rewritten64, embeddings[i], feeds)
        keep = np.repeat(arrays["attention_mask"][i] != 0, HIDDEN)
        jacobian[:, ~keep] = 0.0
        logits = session.run(None, {EMBEDDINGS: embeddings[i][None], "attention_mask": arrays["attention_mask"][i][None]})[0][0]
        expected = reference_lambda(jacobian, logits)
        assert entry["lambda_max"] == pytest.approx(expected, rel=1e-4, abs=1e-7)
        sensitivity = np.array(entry["token_sensitivity"])
        assert sensitivity.shape == (LENGTH,)
        padded = arrays["attention_mask"][i] == 0
        assert np.all(sensitivity[padded] == 0.0)  # exactly zero, not small
        assert np.sum(sensitivity**2) == pytest.approx(1.0, rel=1e-6)
        assert entry["tokens"] == [f"tok{t}" for t in arrays["input_ids"][i]]
    assert document["gradient_check"] is not None
    html = (tmp_path / "a.html").read_text()
    assert "Per-token sensitivity" in html and "tok" in html


def test_padding_changes_nothing_but_the_masked_positions(tmp_path):
    """Perturbing padded positions is excluded: their Jacobian columns are zero in the audit."""
    from fimaudit.embedding_mask import MaskedSource, kept_positions

    class Dense:
        def dense(self, x):
            return np.ones((x.shape[0], 2, x[0].size))

        def vjp(self, sample, u):
            return np.ones((u.shape[0], sample.size))

        def jvp(self, sample, t):
            return t.sum(axis=1, keepdims=True) * np.ones((1, 2))

    inputs = np.arange(12, dtype=np.float32).reshape(2, 3, 2)
    keep = kept_positions(np.array([[1, 1, 0], [1, 0, 0]]), (3, 2))
    masked = MaskedSource(Dense(), keep, None)
    first = masked.at(1)
    assert np.array_equal(first.dense(inputs[1:])[0, 0], [1, 1, 0, 0, 0, 0])
    assert np.array_equal(first.vjp(inputs[1], np.ones((1, 2)))[0], [1, 1, 0, 0, 0, 0])
    assert np.array_equal(first.jvp(inputs[1], np.ones((1, 6)))[0], [2, 2])


def test_one_hot_model_audits_in_one_hot_space(tmp_path):
    model_path = tmp_path / "onehot.onnx"
    onnx.save(build_one_hot(), model_path)
    ids = np.random.default_rng(0).integers(0, 5, size=(3, 4)).astype(np.int64)
    np.savez(tmp_path / "ids.npz", ids=ids)
    code, output = _run([
        "audit", str(model_path), "--wrt", "embeddings", "--data", str(tmp_path / "ids.npz"), "--method", "exact",
        "--json", str(tmp_path / "a.json"),
    ])
    assert code == 0, output
    document = json.loads((tmp_path / "a.json").read_text())
    assert document["data"]["wrt"] == "one_hot"
    assert document["data"]["sample_shape"] == [4, 5]
    model64 = build_one_hot(np.float64)
    rewritten64 = rewrite_at(model64, find_embedding_site(model64))
    session = ReferenceEvaluator(rewritten64)
    for entry in document["samples"]:
        hot = np.eye(5)[ids[entry["index"]]]
        jacobian = reference_jacobian(rewritten64, hot, {})
        logits = session.run(None, {EMBEDDINGS: hot[None]})[0][0]
        assert entry["lambda_max"] == pytest.approx(reference_lambda(jacobian, logits), rel=1e-4)


def test_token_model_without_wrt_names_the_option(tmp_path):
    model_path = tmp_path / "bert.onnx"
    onnx.save(build_bert(), model_path)
    code, output = _run(["inspect", str(model_path)])
    assert "--wrt embeddings" in output


def test_wrt_embeddings_refuses_a_model_without_ids(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "m.onnx")
    code, output = _run(["audit", str(tmp_path / "m.onnx"), "--wrt", "embeddings"])
    assert code == 2 and "embedding lookup" in output


def test_hugging_face_bert_export_against_float64_pytorch(tmp_path):
    """The exporter corpus's tiny HF BERT: lambda_max and per-token sensitivity vs float64 autograd."""
    from pathlib import Path

    corpus = Path(__file__).parent / "corpus"
    if not (corpus / "hf_bert_tiny.onnx").is_file():
        pytest.skip("exporter corpus without the Hugging Face BERT export")
    code, output = _run([
        "audit", str(corpus / "hf_bert_tiny.onnx"), "--wrt", "embeddings", "--data", str(corpus / "hf_bert_tiny_inputs.npz"),
        "--vocab", str(corpus / "hf_bert_tiny_vocab.txt"), "--method", "exact", "--gradients", "graph",
        "--json", str(tmp_path / "a.json"),
    ])
    assert code == 0, output
    document = json.loads((tmp_path / "a.json").read_text())
    reference = np.load(corpus / "hf_bert_tiny_ref.npz")
    measured = np.array([s["lambda_max"] for s in document["samples"]])
    assert np.allclose(measured, reference["lambda_max"], rtol=1e-4)  # measured: 1.1e-7
    sensitivity = np.array([s["token_sensitivity"] for s in document["samples"]])
    assert np.allclose(sensitivity, reference["token_sensitivity"], atol=1e-5)  # measured: 1.6e-8
    assert np.all(sensitivity[reference["attention_mask"] == 0] == 0.0)
    assert document["gradient_check"]["status"] == "passed"
