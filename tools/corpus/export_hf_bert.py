"""Exporter corpus, Hugging Face: a tiny BERT sequence classifier and its float64 reference
Jacobian with respect to the embedding output (issue 16 item 8, ``--wrt embeddings``).

Why: a text classifier's input is token ids, which are not differentiable. The audit is meant
in embedding space; this is the model and the reference that feature will be tested against.

    /work/venvs/torch/bin/python tools/corpus/export_hf_bert.py   # torch 2.13, transformers

Model: ``transformers.BertForSequenceClassification`` from a ``BertConfig`` (vocab 64, hidden 32,
2 layers, 2 heads, intermediate 64, 32 positions, 2 token types, 3 labels, dropout 0,
``attn_implementation="eager"``: the decomposed Softmax(QK^T/sqrt(d) + mask) attention), random
init with ``initializer_range=0.1`` (torch.manual_seed(0)), the classifier rescaled to logit
standard deviation 2 over the sample sequences. Exported by the TorchScript exporter
(``dynamo=False``), opset 17 (native LayerNormalization), inputs ``input_ids``, ``attention_mask``,
``token_type_ids`` (int64 [batch, sequence], both axes dynamic), output ``logits`` [batch, 3].

The differentiated tensor (state it exactly): E = word_embeddings(input_ids)
+ token_type_embeddings(token_type_ids) + position_embeddings(arange(L)), shape [L, 32] per
sequence: the *input* of ``bert.embeddings.LayerNorm`` (before that LayerNorm and its dropout).
In the ONNX graph it is the first input of the first LayerNormalization node (named in the
manifest as ``embedding_tensor``; this script checks, in ONNX Runtime, that this tensor equals
the float32 torch E). Reference J = d logits / d E, float64 [N, 3, L, 32], by
``torch.autograd.functional.jacobian`` on ``model.double()`` with a forward pre-hook that
replaces the LayerNorm's input by E. Positions with attention_mask 0 get J = 0 exactly (no
unmasked query attends to them; the pooled [CLS] token does not see them); lambda_max and
trace are of F = J^T C J over the whole [L, 32] block, which equals F over the unpadded rows.

Files: ``hf_bert_tiny.onnx``, ``hf_bert_tiny_inputs.npz`` (``input_ids``, ``attention_mask``,
``token_type_ids``, int64 [4, 12]), ``hf_bert_tiny_ref.npz`` (``jacobian``, ``logits``,
``lambda_max``, ``trace``, ``embeddings`` E float64 [4, 12, 32], ``attention_mask``,
``token_sensitivity`` [4, 12]: the norm of each token's block of the top eigenvector of F),
``hf_bert_tiny_vocab.txt`` (64 made-up word pieces, one per line, id = line number).
"""

from __future__ import annotations

import copy
import logging
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import torch
import transformers
from transformers import BertConfig, BertForSequenceClassification

sys.path.insert(0, str(Path(__file__).resolve().parent))
from exporter_common import CORPUS, relative_max_error, softmax64, write_entry  # noqa: E402

LOG = logging.getLogger("export_hf_bert")
NAME = "hf_bert_tiny"
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i:02d}" for i in range(59)]
SEQUENCE = 12
LENGTHS = (12, 9, 6, 4)  # real tokens per sequence ([CLS] ... [SEP]); the rest is padding
INPUT_NAMES = ["input_ids", "attention_mask", "token_type_ids"]


def build_model() -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=32, type_vocab_size=2, num_labels=3, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, initializer_range=0.1, attn_implementation="eager",
    )
    return BertForSequenceClassification(config).eval()


def token_batch() -> dict[str, np.ndarray]:
    """Four sequences: [CLS] words [SEP] (a second segment with type 1 in two of them), padded."""
    rng = np.random.default_rng(8)
    ids = np.zeros((len(LENGTHS), SEQUENCE), dtype=np.int64)
    types = np.zeros_like(ids)
    mask = np.zeros_like(ids)
    for row, length in enumerate(LENGTHS):
        ids[row, :length] = rng.integers(5, len(VOCAB), size=length)
        ids[row, 0], ids[row, length - 1] = 2, 3
        mask[row, :length] = 1
        if length >= 9:  # sentence pair: [CLS] a [SEP] b [SEP]
            split = length // 2
            ids[row, split] = 3
            types[row, split + 1:length] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def scale_classifier(model: BertForSequenceClassification, batch: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        std = float(model(**batch).logits.std())
        model.classifier.weight.mul_(2.0 / std)
        model.classifier.bias.mul_(2.0 / std)


def embedding_jacobian(model: BertForSequenceClassification, batch: dict[str, np.ndarray]):
    """Float64 E [N, L, H], logits [N, K] and J = d logits / d E [N, K, L, H]."""
    model64 = copy.deepcopy(model).double().eval()
    layer_norm = model64.bert.embeddings.LayerNorm
    state: dict[str, torch.Tensor] = {}

    def replace_input(module, args):  # forward pre-hook: record E, or substitute the one given
        if "substitute" in state:
            return (state["substitute"],)
        state["recorded"] = args[0].detach().clone()
        return None

    handle = layer_norm.register_forward_pre_hook(replace_input)
    embeddings, logits, jacobians = [], [], []
    try:
        for row in range(batch["input_ids"].shape[0]):
            one = {k: torch.from_numpy(v[row:row + 1]) for k, v in batch.items()}
            state.clear()
            with torch.no_grad():
                z = model64(**one).logits[0]
            e = state.pop("recorded")[0]

            def logits_of(e_: torch.Tensor, one=one) -> torch.Tensor:
                state["substitute"] = e_[None]
                return model64(**one).logits[0]

            jacobian = torch.autograd.functional.jacobian(logits_of, e)
            state.clear()
            embeddings.append(e.numpy())
            logits.append(z.numpy())
            jacobians.append(jacobian.numpy())
    finally:
        handle.remove()
    # E recomputed from the three tables, as the docstring states it.
    tables = model64.bert.embeddings
    for row, e in enumerate(embeddings):
        ids = torch.from_numpy(batch["input_ids"][row])
        types = torch.from_numpy(batch["token_type_ids"][row])
        manual = (tables.word_embeddings(ids) + tables.token_type_embeddings(types)
                  + tables.position_embeddings(torch.arange(ids.shape[0]))).detach().numpy()
        assert np.abs(manual - e).max() < 1e-12, "E is not word + type + position embeddings"
    return np.stack(embeddings), np.stack(logits), np.stack(jacobians)


def embedding_tensor_name(path: Path) -> str:
    proto = onnx.load(str(path))
    norms = [n for n in proto.graph.node if n.op_type == "LayerNormalization"]
    return norms[0].input[0]


def check_in_ort(path: Path, tensor: str, batch: dict[str, np.ndarray], model) -> tuple[float, float]:
    """ORT logits vs float32 torch, and the named ONNX tensor vs float32 torch E."""
    import onnxruntime as ort

    proto = onnx.load(str(path))
    proto.graph.output.append(onnx.helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    logits, embedding = session.run(["logits", tensor], batch)
    recorded = {}
    handle = model.bert.embeddings.LayerNorm.register_forward_pre_hook(
        lambda module, args: recorded.__setitem__("e", args[0].detach().numpy()))
    with torch.no_grad():
        want = model(**{k: torch.from_numpy(v) for k, v in batch.items()}).logits.numpy()
    handle.remove()
    return relative_max_error(logits, want), relative_max_error(embedding, recorded["e"])


def token_sensitivity(jacobians: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """Per-token norm of the top eigenvector of F (float64), [N, L]."""
    out = []
    for j, z in zip(jacobians, logits):
        flat = j.reshape(j.shape[0], -1)
        q = np.sqrt(softmax64(z))
        scaled = q[:, None] * flat
        factor = scaled - np.outer(q, q @ scaled)
        _, _, vt = np.linalg.svd(factor, full_matrices=False)
        out.append(np.linalg.norm(vt[0].reshape(j.shape[1], j.shape[2]), axis=1))
    return np.stack(out)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    CORPUS.mkdir(parents=True, exist_ok=True)
    model = build_model()
    batch = token_batch()
    torch_batch = {k: torch.from_numpy(v) for k, v in batch.items()}
    scale_classifier(model, torch_batch)
    path = CORPUS / f"{NAME}.onnx"
    started = time.perf_counter()
    torch.onnx.export(
        model, (torch_batch["input_ids"], torch_batch["attention_mask"], torch_batch["token_type_ids"]), str(path),
        dynamo=False, opset_version=17, input_names=INPUT_NAMES, output_names=["logits"],
        dynamic_axes={**{n: {0: "batch", 1: "sequence"} for n in INPUT_NAMES}, "logits": {0: "batch"}},
    )
    seconds = time.perf_counter() - started
    onnx.checker.check_model(str(path))
    (CORPUS / f"{NAME}_vocab.txt").write_text("\n".join(VOCAB) + "\n")
    tensor = embedding_tensor_name(path)
    try:
        logits_error, embedding_error = check_in_ort(path, tensor, batch, model)
    except ImportError:
        logits_error = embedding_error = None
    embeddings, logits, jacobians = embedding_jacobian(model, batch)
    padded = batch["attention_mask"][:, None, :, None] == 0
    assert np.all(np.where(padded, jacobians, 0.0) == 0.0), "padded positions have a nonzero Jacobian"
    entry = write_entry(
        NAME, inputs=embeddings.astype(np.float32), jacobians=jacobians, logits=logits,
        data_arrays=batch,
        extra_arrays={"embeddings": embeddings, "attention_mask": batch["attention_mask"],
                      "token_sensitivity": token_sensitivity(jacobians, logits)},
        entry={
            "exporter": "torch.onnx.export(dynamo=False) of transformers.BertForSequenceClassification",
            "exporter_family": "huggingface-transformers",
            "framework": f"torch {torch.__version__}, transformers {transformers.__version__}",
            "generated_by": "tools/corpus/export_hf_bert.py", "batch": "dynamic (batch, sequence)",
            "inputs": INPUT_NAMES, "input_kind": "token ids",
            "wrt": "embeddings",
            "embedding_tensor": tensor,
            "embedding_definition": "word_embeddings(input_ids) + token_type_embeddings(token_type_ids) + "
                                    "position_embeddings(arange(L)): the input of bert.embeddings.LayerNorm",
            "vocabulary": f"{NAME}_vocab.txt",
            "ops": sorted({n.op_type for n in onnx.load(str(path)).graph.node}),
            "architecture": "BERT encoder, 2 layers, hidden 32, 2 heads, eager attention with additive mask; pooler (Tanh); Linear",
            "reference_method": "torch.autograd.functional.jacobian on model.double() w.r.t. the LayerNorm input (pre-hook)",
            "ort_vs_framework_rel_err": logits_error, "ort_embedding_tensor_vs_framework_rel_err": embedding_error,
            "export_seconds": round(seconds, 2),
        },
    )
    LOG.info("%s: opset %d, %d bytes, embedding tensor %s, lambda_max %s, ORT vs torch %s (E %s)", path.name,
             entry["opset"], entry["file_size"], tensor, np.round(entry["reference_lambda_max"], 4),
             logits_error, embedding_error)


if __name__ == "__main__":
    main()
