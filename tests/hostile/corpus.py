"""The hostile-input corpus: every bad model, data file and argument fimaudit must refuse cleanly.

Each case builds its files into a test's tmp_path at test time (no binary files in the repository)
and returns the CLI arguments; ``exit_code`` and ``message`` (a regular expression searched in
stderr, or in stdout for exit 0) are what the CLI must answer. ``test_corpus.py`` drives them all
through one parametrised test.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from tests.hostile import models

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_models"
MLP = SAMPLES / "mlp.onnx"
DIGITS = SAMPLES / "digits_test.npy"

Builder = Callable[[Path], list[str]]


@dataclass(frozen=True)
class Case:
    id: str
    build: Builder
    exit_code: int
    message: str


CASES: list[Case] = []


def case(id: str, exit_code: int, message: str) -> Callable[[Builder], Builder]:
    """Register the decorated builder as a corpus case."""

    def register(build: Builder) -> Builder:
        CASES.append(Case(id, build, exit_code, message))
        return build

    return register


def _save(model: onnx.ModelProto, path: Path) -> Path:
    path.write_bytes(model.SerializeToString())
    return path


def _digits(count: int = 2) -> np.ndarray:
    return np.load(DIGITS)[:count]


def _audit_mlp(data: Path, *extra: str) -> list[str]:
    return ["audit", str(MLP), "--data", str(data), *extra]


# --- model files ---------------------------------------------------------------------------------


@case("model-empty", 2, r"model\.onnx is empty")
def _(tmp: Path) -> list[str]:
    (tmp / "model.onnx").write_bytes(b"")
    return ["audit", str(tmp / "model.onnx")]


@case("model-truncated", 2, r"not a valid ONNX file")
def _(tmp: Path) -> list[str]:
    (tmp / "model.onnx").write_bytes(MLP.read_bytes()[:700])
    return ["audit", str(tmp / "model.onnx")]


@case("model-random-bytes", 2, r"not a valid ONNX file|not an ONNX model")
def _(tmp: Path) -> list[str]:
    (tmp / "model.onnx").write_bytes(np.random.default_rng(1).bytes(4096))
    return ["audit", str(tmp / "model.onnx")]


@case("model-text", 2, r"not a valid ONNX file|not an ONNX model")
def _(tmp: Path) -> list[str]:
    (tmp / "model.onnx").write_text("graph { node { op_type: 'Relu' } }\n")
    return ["audit", str(tmp / "model.onnx")]


@case("model-is-a-folder", 2, r"is a directory")
def _(tmp: Path) -> list[str]:
    (tmp / "model.onnx").mkdir()
    return ["audit", str(tmp / "model.onnx")]


@case("model-missing", 2, r"does not exist")
def _(tmp: Path) -> list[str]:
    return ["audit", str(tmp / "absent.onnx")]


@case("external-data-absolute", 2, r"outside the model's folder.*refusing")
def _(tmp: Path) -> list[str]:
    secret = tmp / "secret.bin"
    secret.write_bytes(b"\0" * 48)
    folder = tmp / "model"
    folder.mkdir()
    return ["audit", str(_save(models.with_external_weight(str(secret)), folder / "model.onnx"))]


@case("external-data-dotdot", 2, r"outside the model's folder.*refusing")
def _(tmp: Path) -> list[str]:
    (tmp / "secret.bin").write_bytes(b"\0" * 48)
    folder = tmp / "model"
    folder.mkdir()
    return ["audit", str(_save(models.with_external_weight("../secret.bin"), folder / "model.onnx"))]


@case("external-data-symlink", 2, r"outside the model's folder.*refusing")
def _(tmp: Path) -> list[str]:
    (tmp / "secret.bin").write_bytes(b"\0" * 48)
    folder = tmp / "model"
    folder.mkdir()
    os.symlink(tmp / "secret.bin", folder / "weights.bin")
    return ["audit", str(_save(models.with_external_weight("weights.bin"), folder / "model.onnx"))]


@case("external-data-missing", 2, r"external data file 'weights\.bin'.* is missing")
def _(tmp: Path) -> list[str]:
    return ["audit", str(_save(models.with_external_weight("weights.bin"), tmp / "model.onnx"))]


@case("external-data-short", 2, r"external data")
def _(tmp: Path) -> list[str]:
    (tmp / "weights.bin").write_bytes(b"\0" * 5)
    return ["audit", str(_save(models.with_external_weight("weights.bin"), tmp / "model.onnx"))]


@case("unknown-custom-op", 2, r"ONNX Runtime cannot load the model.*FancyActivation|com\.example\.secret")
def _(tmp: Path) -> list[str]:
    return ["audit", str(_save(models.custom_op(), tmp / "model.onnx"))]


@case("ir-version-99-lowered", 0, r"lowered IR version 99 -> \d+(.|\n)*4 samples, lambda_max")
def _(tmp: Path) -> list[str]:
    model = onnx.load(MLP)
    model.ir_version = 99
    return ["audit", str(_save(model, tmp / "model.onnx")), "--data", str(DIGITS), "--samples", "4"]


@case("opset-too-new", 2, r"imports opset 99 of ai\.onnx, but ONNX Runtime [\d.]+ supports up to opset \d+")
def _(tmp: Path) -> list[str]:
    return ["audit", str(_save(models.opset_too_new(), tmp / "model.onnx"))]


@case("ir-99-and-opset-too-new", 2, r"opset")
def _(tmp: Path) -> list[str]:
    model = models.opset_too_new()
    model.ir_version = 99
    return ["audit", str(_save(model, tmp / "model.onnx"))]


@case("input-too-large", 2, r"(?:would need|needs at least) [\d.]+ [GT]iB")
def _(tmp: Path) -> list[str]:
    return ["audit", str(_save(models.huge_input(), tmp / "model.onnx")), "--samples", "1"]


@case("quantized-graph-gradients", 2, r"quantized.*QLinearMatMul.*--gradients fd")
def _(tmp: Path) -> list[str]:
    return ["audit", str(_save(models.quantized(), tmp / "model.onnx")), "--gradients", "graph", "--samples", "2"]


@case("quantized-fd-warned", 0, r"WARNING: the model is quantized \(QuantizeLinear 'quantize', QLinearMatMul 'qmatmul'.*steps of its quantizer")
def _(tmp: Path) -> list[str]:
    return ["audit", str(_save(models.quantized(), tmp / "model.onnx")), "--gradients", "auto", "--samples", "2"]


# skl2onnx's default ZipMap output is read through ZipMap's own input, the probability tensor
# (issue 16 item 6): once refused, now audited — chosen automatically or named by the user.
@case("zipmap-output", 0, r"2 samples, lambda_max median [\d.]+.*gradients graph")
def _(tmp: Path) -> list[str]:
    return ["audit", str(_save(models.zipmap_model(), tmp / "model.onnx")), "--samples", "2"]


@case("zipmap-output-chosen", 0, r"16 samples, lambda_max median [\d.]+.*gradients graph")
def _(tmp: Path) -> list[str]:
    return ["audit", str(_save(models.zipmap_model(), tmp / "model.onnx")), "--output", "output_probability"]


@case("token-id-input", 2, r"input_ids tensor\(int64\), it indexes the embedding Gather 'token_embedding'.*not differentiable")
def _(tmp: Path) -> list[str]:
    return ["audit", str(_save(models.token_ids(), tmp / "model.onnx"))]


@case("token-id-input-chosen", 2, r"'input_ids' is tensor\(int64\), not a float tensor: it is not differentiable, it indexes the embedding Gather 'token_embedding' \(table 'embedding\.weight'\)")
def _(tmp: Path) -> list[str]:
    return ["audit", str(_save(models.token_ids(), tmp / "model.onnx")), "--input", "input_ids"]


@case("model-nan-weights", 2, r"the model's scores are NaN or Inf on 2 of 2 samples")
def _(tmp: Path) -> list[str]:
    weight = np.ones((4, 3), np.float32)
    weight[1, 2] = np.nan
    return ["audit", str(_save(models.linear(weight=weight), tmp / "model.onnx")), "--samples", "2"]


@case("unknown-input-name", 2, r"--input 'pixels' is not a model input; inputs are: input")
def _(tmp: Path) -> list[str]:
    return ["audit", str(MLP), "--input", "pixels"]


@case("names-with-terminal-escapes", 2, r"outputs are: logits \\x1b\[2J\\rpwned$")
def _(tmp: Path) -> list[str]:
    model = models.linear()
    hostile = "logits\n\x1b[2J\rpwned"
    model.graph.node[0].output[0] = hostile
    model.graph.output[0].name = hostile
    return ["audit", str(_save(model, tmp / "model.onnx")), "--output", "probs"]


@case("unknown-output-name", 2, r"--output 'probs' is not a model output")
def _(tmp: Path) -> list[str]:
    return ["audit", str(MLP), "--output", "probs"]


# --- data files ----------------------------------------------------------------------------------


@case("data-missing", 2, r"data file not found")
def _(tmp: Path) -> list[str]:
    return _audit_mlp(tmp / "absent.npy")


@case("data-corrupt-npy", 2, r"data\.npy is not a readable \.npy array \(bad header")
def _(tmp: Path) -> list[str]:
    (tmp / "data.npy").write_bytes(b"\x93NUMPY garbage that is not a header")
    return _audit_mlp(tmp / "data.npy")


@case("data-truncated-npy", 2, r"data\.npy.*(truncated|not a readable)")
def _(tmp: Path) -> list[str]:
    np.save(tmp / "full.npy", _digits(8))
    (tmp / "data.npy").write_bytes((tmp / "full.npy").read_bytes()[:300])
    return _audit_mlp(tmp / "data.npy")


# A .npy that large is mapped, not read (fimaudit/data/streaming.py): what it lacks is the data.
@case("data-header-claims-huge", 2, r"data\.npy is truncated: 1000000000 samples need 256000000000 bytes of data, "
      r"the file holds 0")
def _(tmp: Path) -> list[str]:
    header = {"descr": "<f4", "fortran_order": False, "shape": (10**9, 1, 8, 8)}
    with open(tmp / "data.npy", "wb") as stream:
        np.lib.format.write_array_header_1_0(stream, header)
    return _audit_mlp(tmp / "data.npy", "--max-memory", "8G")


@case("data-pickled-npy", 2, r"pickled Python objects; fimaudit never unpickles")
def _(tmp: Path) -> list[str]:
    array = np.empty(2, dtype=object)
    array[0], array[1] = {"a": 1}, [1, 2]
    np.save(tmp / "data.npy", array, allow_pickle=True)
    return _audit_mlp(tmp / "data.npy")


@case("data-pickled-npz", 2, r"pickled Python objects; fimaudit never unpickles")
def _(tmp: Path) -> list[str]:
    array = np.empty(2, dtype=object)
    array[0], array[1] = {"a": 1}, [1, 2]
    np.savez(tmp / "data.npz", input=array)
    return _audit_mlp(tmp / "data.npz")


@case("data-raw-pickle", 2, r"is a Python pickle; fimaudit never unpickles data")
def _(tmp: Path) -> list[str]:
    (tmp / "data.npy").write_bytes(pickle.dumps({"payload": [1, 2, 3]}))
    return _audit_mlp(tmp / "data.npy")


@case("data-nan", 2, r"contains 1 NaN/Inf values \(first at index \(1, 0, 2, 3\)\)")
def _(tmp: Path) -> list[str]:
    data = _digits(3)
    data[1, 0, 2, 3] = np.nan
    np.save(tmp / "data.npy", data)
    return _audit_mlp(tmp / "data.npy")


@case("data-inf", 2, r"NaN/Inf")
def _(tmp: Path) -> list[str]:
    data = _digits(3)
    data[2, 0, 0, 0] = -np.inf
    np.save(tmp / "data.npy", data)
    return _audit_mlp(tmp / "data.npy")


@case("data-wrong-shape", 2, r"shape \[64\].*expects \[N\] \+ \[1, 8, 8\]")
def _(tmp: Path) -> list[str]:
    np.save(tmp / "data.npy", _digits(4).reshape(4, 64))
    return _audit_mlp(tmp / "data.npy")


@case("data-wrong-dtype-strings", 2, r"dtype <U3; input 'input' expects float32 \[N, 1, 8, 8\]")
def _(tmp: Path) -> list[str]:
    np.save(tmp / "data.npy", np.full((2, 1, 8, 8), "abc"))
    return _audit_mlp(tmp / "data.npy")


@case("data-wrong-dtype-complex", 2, r"dtype complex64; input .input. expects float32 \[N, 1, 8, 8\]")
def _(tmp: Path) -> list[str]:
    np.save(tmp / "data.npy", _digits(2).astype(np.complex64))
    return _audit_mlp(tmp / "data.npy")


@case("data-scalar", 2, r"holds a scalar")
def _(tmp: Path) -> list[str]:
    np.save(tmp / "data.npy", np.float32(3.0))
    return _audit_mlp(tmp / "data.npy")


@case("data-empty", 2, r"holds no samples")
def _(tmp: Path) -> list[str]:
    np.save(tmp / "data.npy", np.zeros((0, 1, 8, 8), np.float32))
    return _audit_mlp(tmp / "data.npy")


@case("npz-names-mismatch", 2, r"holds arrays \['images', 'labels'\]; name one of them 'input'")
def _(tmp: Path) -> list[str]:
    np.savez(tmp / "data.npz", images=_digits(2), labels=np.arange(2))
    return _audit_mlp(tmp / "data.npz")


@case("extra-input-missing", 2, r"the model has other inputs \['bias_in'\]; pass an \.npz")
def _(tmp: Path) -> list[str]:
    np.save(tmp / "data.npy", np.ones((2, 4), np.float32))
    return ["audit", str(_save(models.two_inputs(), tmp / "model.onnx")), "--data", str(tmp / "data.npy")]


@case("extra-input-nan", 2, r"data\.npz\['bias_in'\] contains 1 NaN/Inf")
def _(tmp: Path) -> list[str]:
    np.savez(tmp / "data.npz", x=np.ones((2, 4), np.float32), bias_in=np.array([[0.0, np.nan, 1.0]], np.float32))
    return ["audit", str(_save(models.two_inputs(), tmp / "model.onnx")), "--data", str(tmp / "data.npz")]


@case("npz-corrupt", 2, r"data\.npz.*(corrupt|not a readable)")
def _(tmp: Path) -> list[str]:
    np.savez(tmp / "full.npz", input=_digits(8))
    (tmp / "data.npz").write_bytes((tmp / "full.npz").read_bytes()[:400])
    return _audit_mlp(tmp / "data.npz")


@case("npz-bad-member", 2, r"data\.npz\[.input.\] is not a readable \.npy array")
def _(tmp: Path) -> list[str]:
    with zipfile.ZipFile(tmp / "data.npz", "w") as archive:
        archive.writestr("input.npy", b"not an array")
    return _audit_mlp(tmp / "data.npz")


# A folder is image data (--data DIR); one named like an array file and holding none is refused.
@case("data-is-a-folder", 2, r"the data folder data\.npy holds no PNG/JPEG/BMP/WebP images")
def _(tmp: Path) -> list[str]:
    (tmp / "data.npy").mkdir()
    return _audit_mlp(tmp / "data.npy")


# --- arguments -----------------------------------------------------------------------------------


@case("unknown-method", 2, r"Invalid value for '--method': 'fastest' is not")
def _(tmp: Path) -> list[str]:
    return _audit_mlp(DIGITS, "--method", "fastest")


@case("budget-zero", 2, r"Invalid value for '--budget': 0 is not in the range x>=1")
def _(tmp: Path) -> list[str]:
    return _audit_mlp(DIGITS, "--budget", "0")


@case("budget-negative", 2, r"Invalid value for '--budget': -5 is not in the range x>=1")
def _(tmp: Path) -> list[str]:
    return _audit_mlp(DIGITS, "--budget", "-5")


@case("samples-zero", 2, r"Invalid value for '--samples'")
def _(tmp: Path) -> list[str]:
    return _audit_mlp(DIGITS, "--samples", "0")


@case("seed-not-integer", 2, r"Invalid value for '--seed': 'abc' is not a valid integer")
def _(tmp: Path) -> list[str]:
    return _audit_mlp(DIGITS, "--seed", "abc")


@case("seed-float", 2, r"Invalid value for '--seed': '1\.5' is not a valid integer")
def _(tmp: Path) -> list[str]:
    return _audit_mlp(DIGITS, "--seed", "1.5")


@case("seed-negative", 2, r"Invalid value for '--seed': -1 is not in the range x>=0")
def _(tmp: Path) -> list[str]:
    return _audit_mlp(DIGITS, "--seed", "-1")


@case("threshold-nan", 2, r"--fail-above must be a finite number")
def _(tmp: Path) -> list[str]:
    return _audit_mlp(DIGITS, "--samples", "2", "--fail-above", "nan")


@case("json-in-missing-folder", 2, r"cannot write .*audit.json: .*nowhere does not exist")
def _(tmp: Path) -> list[str]:
    return _audit_mlp(DIGITS, "--json", str(tmp / "nowhere" / "audit.json"))


@case("report-under-a-file", 2, r"cannot write .*report\.html")
def _(tmp: Path) -> list[str]:
    (tmp / "some_file").write_text("a regular file, not a folder")
    return _audit_mlp(DIGITS, "--report", str(tmp / "some_file" / "report.html"))


@case("json-is-a-folder", 2, r"is a folder; give a file name|is a directory")
def _(tmp: Path) -> list[str]:
    (tmp / "out").mkdir()
    return _audit_mlp(DIGITS, "--json", str(tmp / "out"))


@case("max-memory-too-small", 2, r"needs at least [\d.]+ [KMG]iB.*--max-memory is 1\.0 KiB")
def _(tmp: Path) -> list[str]:
    return _audit_mlp(DIGITS, "--samples", "2", "--max-memory", "1K")


@case("max-memory-garbage", 2, r"Invalid value for '--max-memory'")
def _(tmp: Path) -> list[str]:
    return _audit_mlp(DIGITS, "--max-memory", "lots")


@case("max-memory-zero", 2, r"Invalid value for '--max-memory'")
def _(tmp: Path) -> list[str]:
    return _audit_mlp(DIGITS, "--max-memory", "0")


@case("subnormal-weights-warned", 0, r"WARNING: subnormal weights: 3 of 12 weights, in 1 tensor \(W: 3\).*--flush-subnormals")
def _(tmp: Path) -> list[str]:
    return ["audit", str(_save(models.subnormal_weights(), tmp / "model.onnx")), "--samples", "2"]
