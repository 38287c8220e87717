"""Fuzzing the CLI with mutated models and data: exit code 0, 1 or 2, never a traceback.

Three sources of hostile input: raw byte mutations of a valid model file (most die in the
protobuf parser), structural mutations of its ModelProto (they parse, and reach the checker,
shape inference, ONNX Runtime and the audit), and arbitrary numpy arrays as ``--data``.
Besides the exit code, an error must be one line starting with ``fimaudit: error:`` and must not
be the CLI's last-resort "internal error": every failure the fuzzer finds must be turned into a
typed error where it happens.

The example counts keep the whole file under ~30 s on one core; set FIMAUDIT_FUZZ_EXAMPLES to run
a longer campaign (e.g. 2000).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from onnx import TensorProto

from fimaudit.cli import main
from tests.hostile import models

EXAMPLES = int(os.environ.get("FIMAUDIT_FUZZ_EXAMPLES", "0")) or None
FUZZ = settings(
    max_examples=EXAMPLES or 100,
    deadline=None,
    derandomize=EXAMPLES is None,  # reproducible in CI; random in a campaign
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
BASE_MODEL = models.linear(features=4, classes=3)
SAMPLES = Path(__file__).resolve().parents[2] / "sample_models"
SAMPLE_MODEL, SAMPLE_DATA = SAMPLES / "mlp.onnx", SAMPLES / "digits_test.npy"
BASE_BYTES = BASE_MODEL.SerializeToString()


def run_cli(args: list[str]) -> None:
    """Run the CLI and check the contract that holds for every input."""
    result = CliRunner().invoke(main, args)
    assert isinstance(result.exception, (SystemExit, type(None))), repr(result.exception)
    assert result.exit_code in (0, 1, 2), (result.exit_code, result.output)
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        lines = result.stderr.strip().splitlines()
        assert lines and lines[-1].startswith("fimaudit: error: "), result.stderr
        assert "internal error" not in lines[-1], lines[-1] + "\n" + verbose_traceback(args)


def verbose_traceback(args: list[str]) -> str:
    """The traceback behind an internal error (rerun with -v), for the failure message."""
    result = CliRunner().invoke(main, ["-v", *args])
    return "\n".join(result.stderr.splitlines()[-24:])


def audit_args(model: Path, *extra: str) -> list[str]:
    return ["audit", str(model), "--samples", "2", *extra]


# --- raw bytes -----------------------------------------------------------------------------------

byte_edits = st.lists(
    st.tuples(st.integers(0, len(BASE_BYTES) - 1), st.integers(0, 255)), min_size=1, max_size=8
)


@FUZZ
@given(edits=byte_edits, cut=st.one_of(st.none(), st.integers(0, len(BASE_BYTES))))
def test_mutated_model_bytes(edits: list[tuple[int, int]], cut: int | None) -> None:
    data = bytearray(BASE_BYTES)
    for position, value in edits:
        data[position] = value
    if cut is not None:
        data = data[:cut]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        path.write_bytes(bytes(data))
        run_cli(audit_args(path))


# --- structural mutations ------------------------------------------------------------------------

Mutation = Callable[[onnx.ModelProto], None]
ELEM_TYPES = st.sampled_from(sorted(TensorProto.DataType.values()))
OP_TYPES = st.sampled_from(["Relu", "Softmax", "Sigmoid", "Gather", "Cast", "Identity", "Conv", "NoSuchOp", "Loop", "If", ""])
DIMS = st.lists(st.one_of(st.integers(-2, 6), st.sampled_from(["N", ""])), min_size=0, max_size=4)


def _set_dims(value: onnx.ValueInfoProto, dims: list) -> None:
    shape = value.type.tensor_type.shape
    shape.ClearField("dim")
    for dim in dims:
        entry = shape.dim.add()
        if isinstance(dim, int):
            entry.dim_value = dim
        elif dim:
            entry.dim_param = dim


def mutations() -> st.SearchStrategy[Mutation]:
    def ir(version: int) -> Mutation:
        return lambda model: setattr(model, "ir_version", version)

    def opset(version: int) -> Mutation:
        return lambda model: setattr(model.opset_import[0], "version", version)

    def input_type(elem: int) -> Mutation:
        return lambda model: setattr(model.graph.input[0].type.tensor_type, "elem_type", elem)

    def output_type(elem: int) -> Mutation:
        return lambda model: setattr(model.graph.output[0].type.tensor_type, "elem_type", elem)

    def input_dims(dims: list) -> Mutation:
        return lambda model: _set_dims(model.graph.input[0], dims)

    def output_dims(dims: list) -> Mutation:
        return lambda model: _set_dims(model.graph.output[0], dims)

    def op_type(name: str) -> Mutation:
        return lambda model: setattr(model.graph.node[0], "op_type", name)

    def weight_bytes(raw: bytes) -> Mutation:
        def apply(model: onnx.ModelProto) -> None:
            model.graph.initializer[0].ClearField("float_data")
            model.graph.initializer[0].raw_data = raw

        return apply

    def weight_dims(dims: list[int]) -> Mutation:
        def apply(model: onnx.ModelProto) -> None:
            model.graph.initializer[0].ClearField("dims")
            model.graph.initializer[0].dims.extend(dims)

        return apply

    def weight_type(elem: int) -> Mutation:
        return lambda model: setattr(model.graph.initializer[0], "data_type", elem)

    def drop_initializer(model: onnx.ModelProto) -> None:
        del model.graph.initializer[:]

    def drop_outputs(model: onnx.ModelProto) -> None:
        del model.graph.output[:]

    def duplicate_input(model: onnx.ModelProto) -> None:
        model.graph.input.append(model.graph.input[0])

    def rename(name: str) -> Mutation:
        def apply(model: onnx.ModelProto) -> None:
            model.graph.node[0].output[0] = name

        return apply

    def external(location: str) -> Mutation:
        def apply(model: onnx.ModelProto) -> None:
            weight = model.graph.initializer[0]
            weight.ClearField("raw_data")
            weight.ClearField("float_data")
            weight.data_location = TensorProto.EXTERNAL
            for key, value in (("location", location), ("offset", "0"), ("length", "48")):
                entry = weight.external_data.add()
                entry.key, entry.value = key, value

        return apply

    def attribute(value: int) -> Mutation:
        return lambda model: model.graph.node[0].attribute.append(onnx.helper.make_attribute("axis", value))

    names = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)
    return st.one_of(
        st.integers(-1, 200).map(ir),
        st.integers(-1, 200).map(opset),
        ELEM_TYPES.map(input_type),
        ELEM_TYPES.map(output_type),
        ELEM_TYPES.map(weight_type),
        DIMS.map(input_dims),
        DIMS.map(output_dims),
        st.lists(st.integers(-1, 6), max_size=3).map(weight_dims),
        OP_TYPES.map(op_type),
        st.binary(max_size=64).map(weight_bytes),
        st.sampled_from([drop_initializer, drop_outputs, duplicate_input]),
        names.map(rename),
        st.sampled_from(["/etc/passwd", "../x.bin", "w.bin", "", "\x00", "a" * 300, "."]).map(external),
        st.integers(-5, 5).map(attribute),
    )


# Gradient graphs (fimaudit.gradients.graph) are fuzzed too.
GRADIENTS = ["fd", "auto"]


@FUZZ
@given(
    changes=st.lists(mutations(), min_size=1, max_size=3),
    gradients=st.sampled_from(GRADIENTS),
    command=st.sampled_from(["audit", "inspect"]),
    base=st.sampled_from(["linear", "mlp.onnx", "vgg_small.onnx"]),
)
def test_mutated_model_structure(changes: list[Mutation], gradients: str, command: str, base: str) -> None:
    model = onnx.ModelProto()
    model.CopyFrom(BASE_MODEL if base == "linear" else onnx.load(SAMPLES / base))
    for change in changes:
        try:
            change(model)
        except IndexError:  # an earlier change removed what this one edits
            pass
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        path.write_bytes(model.SerializeToString())
        run_cli(audit_args(path, "--gradients", gradients) if command == "audit" else ["inspect", str(path)])


# --- data arrays ---------------------------------------------------------------------------------

DTYPES = st.one_of(
    hnp.floating_dtypes(), hnp.integer_dtypes(), hnp.boolean_dtypes(), hnp.complex_number_dtypes(),
    hnp.unicode_string_dtypes(max_len=3), hnp.datetime64_dtypes(), hnp.byte_string_dtypes(max_len=3),
)
ANY_ARRAY = DTYPES.flatmap(
    lambda dtype: hnp.arrays(dtype, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5))
)
# Arrays the linear model accepts, [n, 4], with any real values (huge, tiny, NaN, Inf): they reach
# the audit itself.
NEAR_VALID = st.one_of(hnp.floating_dtypes(), hnp.integer_dtypes(), hnp.boolean_dtypes()).flatmap(
    lambda dtype: hnp.arrays(dtype, st.tuples(st.integers(0, 3), st.just(4)))
)
ARRAYS = st.one_of(ANY_ARRAY, NEAR_VALID)


@FUZZ
@given(
    array=ARRAYS,
    container=st.sampled_from(["npy", "npz-input", "npz-other", "npz-two"]),
    cut=st.one_of(st.none(), st.integers(0, 400)),
)
def test_fuzzed_data(array: np.ndarray, container: str, cut: int | None) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        model = root / "model.onnx"
        model.write_bytes(BASE_BYTES)
        data = root / ("data.npy" if container == "npy" else "data.npz")
        if container == "npy":
            np.save(data, array)
        elif container == "npz-input":
            np.savez(data, x=array)
        elif container == "npz-other":
            np.savez(data, something=array)
        else:
            np.savez(data, x=array, extra=array)
        if cut is not None:
            data.write_bytes(data.read_bytes()[:cut])
        run_cli(["audit", str(model), "--data", str(data), "--samples", "3"])


# --- option values -------------------------------------------------------------------------------

OPTION_VALUES = st.one_of(
    st.integers(-3, 10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=10),
    st.sampled_from(["0", "1", "2K", "1G", "nan", "inf", "-0", "exact", "max", "logits", "input", ""]),
)
OPTIONS = st.sampled_from(
    ["--seed", "--samples", "--budget", "--max-memory", "--fail-above", "--statistic", "--method", "--input", "--output"]
)


@FUZZ
@given(options=st.lists(st.tuples(OPTIONS, OPTION_VALUES), min_size=1, max_size=3))
def test_fuzzed_options(options: list[tuple[str, str]]) -> None:
    args = ["audit", str(SAMPLE_MODEL), "--data", str(SAMPLE_DATA), "--samples", "2"]
    for name, value in options:
        args += [name, value]
    run_cli(args)
