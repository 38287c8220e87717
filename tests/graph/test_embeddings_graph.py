"""graph/embeddings.py: finding the embedding (or one-hot) tensor and rewriting the model at it."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from fimaudit.graph.embeddings import EMBEDDINGS, embedding_model, find_embedding_site, rewrite_at, token_input_note
from tests.test_embeddings import build_bert, build_one_hot, reference_embeddings, token_data


def test_bert_site_is_the_sum_before_layer_norm():
    site = find_embedding_site(build_bert())
    assert (site.kind, site.ids_input, site.tensor) == ("embeddings", "input_ids", "emb")
    assert site.tables == ["word", "types", "pos"]


def test_distilbert_site_has_no_token_types():
    site = find_embedding_site(build_bert(token_types=False))
    assert site.tensor == "emb" and site.tables == ["word", "pos"]


def test_rewrite_keeps_the_mask_and_drops_the_lookups():
    model = build_bert()
    rewritten = rewrite_at(model, find_embedding_site(model))
    names = [value.name for value in rewritten.graph.input]
    assert names == [EMBEDDINGS, "attention_mask"]
    assert not any(node.op_type == "Gather" and node.input[0] in ("word", "pos", "types") for node in rewritten.graph.node)
    onnx.checker.check_model(rewritten)


def test_rewritten_model_agrees_with_the_original_at_the_real_embeddings():
    model = build_bert(np.float64)
    site = find_embedding_site(model)
    arrays = token_data()
    cut = ReferenceEvaluator(embedding_model(model, site))
    embeddings = cut.run(None, {name: arrays[name] for name in ("input_ids", "token_type_ids")})[0]
    assert np.allclose(embeddings, reference_embeddings(model, arrays), atol=1e-12)
    original = ReferenceEvaluator(model).run(None, arrays)[0]
    rewritten = ReferenceEvaluator(rewrite_at(model, site)).run(None, {EMBEDDINGS: embeddings, "attention_mask": arrays["attention_mask"]})[0]
    assert np.allclose(original, rewritten, atol=1e-12)


def test_one_hot_site():
    site = find_embedding_site(build_one_hot())
    assert (site.kind, site.tensor) == ("one_hot", "hot")


def _equal_cast_model(classes: np.ndarray) -> onnx.ModelProto:
    nodes = [
        helper.make_node("Unsqueeze", ["ids", "axis"], ["ids3"]),
        helper.make_node("Equal", ["ids3", "classes"], ["eq"]),
        helper.make_node("Cast", ["eq"], ["hot"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["hot", "axis1"], ["logits"], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["n", 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array([-1], dtype=np.int64), "axis"), numpy_helper.from_array(classes, "classes"),
         numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_equal_cast_one_hot_and_a_pad_comparison_is_not_one():
    site = find_embedding_site(_equal_cast_model(np.arange(4, dtype=np.int64)))
    assert site is not None and (site.kind, site.tensor) == ("one_hot", "hot")
    assert find_embedding_site(_equal_cast_model(np.array([0], dtype=np.int64))) is None


def test_token_input_note_names_the_option():
    assert "--wrt embeddings" in token_input_note(build_bert())
