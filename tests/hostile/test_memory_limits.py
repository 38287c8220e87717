"""--max-memory is kept (issue 15 item 4) and sizes never wrap (item 7): refusals up front, peaks measured.

The ConstantOfShape case runs the real CLI in a child process and reads the child's own peak
resident memory (``os.wait4``): a refusal made after ONNX Runtime built the 1.1 GiB tensor would
still show it there.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from fimaudit.cli import main
from fimaudit.errors import ResourceError
from fimaudit.resources import (
    MemoryBudget,
    array_bytes,
    audit_needs,
    element_count,
    format_size,
    memory_limits,
    model_tensors,
)
from tests.hostile import models

ROOT = Path(__file__).resolve().parents[2]
BIG = 300_000_000  # float32 elements: 1.1 GiB


def _save(model: onnx.ModelProto, path: Path) -> Path:
    path.write_bytes(model.SerializeToString())
    return path


def constant_of_shape(elements: int = BIG) -> onnx.ModelProto:
    """logits = x W + sum(ConstantOfShape([elements])): a 1.1 GiB tensor of constant shape."""
    weight = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("ConstantOfShape", ["shape"], ["big"], value=numpy_helper.from_array(np.array([1e-9], np.float32))),
            helper.make_node("ReduceSum", ["big"], ["total"], keepdims=0),
            helper.make_node("MatMul", ["x", "W"], ["scores"]),
            helper.make_node("Add", ["scores", "total"], ["logits"]),
        ],
        "constant_of_shape",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(np.array([elements], np.int64), "shape"), numpy_helper.from_array(weight, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


def sqrt_head() -> onnx.ModelProto:
    """logits = sqrt(|x|) W: finite scores at x = 0, infinite derivatives there."""
    weight = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Abs", ["x"], ["a"]),
            helper.make_node("Sqrt", ["a"], ["s"]),
            helper.make_node("MatMul", ["s", "W"], ["logits"]),
        ],
        "sqrt_head",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(weight, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def declared_input(dim: int) -> onnx.ModelProto:
    """A linear model whose input declares [N, dim] (dim may overflow int64 arithmetic)."""
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["x"], ["m"], axes=[1], keepdims=1), helper.make_node("Tile", ["m", "reps"], ["logits"])],
        "declared",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", dim])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(np.array([1, 3], np.int64), "reps")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


# The child reports its own high-water mark (VmHWM of the process image exec created). The
# rusage of wait4 would not do: Linux carries the parent's resident size at fork into the child's
# ru_maxrss, so under a pytest process of 1+ GiB every child "peaked" above the limit.
_PEAK_REPORTER = """
import atexit, sys
from fimaudit.cli import main
peak_file = sys.argv[1]
def _report_peak():
    with open('/proc/self/status', encoding='ascii') as status:
        kib = next(line.split()[1] for line in status if line.startswith('VmHWM:'))
    with open(peak_file, 'w', encoding='ascii') as out:
        out.write(kib)
atexit.register(_report_peak)
sys.argv = ['fimaudit', *sys.argv[2:]]
main()
"""


def _run_measured(args: list[str]) -> tuple[int, str, int]:
    """The CLI in a child process: (exit code, stderr, the child's own peak RSS in bytes)."""
    with tempfile.TemporaryDirectory() as folder:
        peak_file = Path(folder) / "peak"
        process = subprocess.run(
            [sys.executable, "-c", _PEAK_REPORTER, str(peak_file), *args], cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        peak = int(peak_file.read_text(encoding="ascii")) * 1024
    return process.returncode, process.stderr.decode("utf-8", "replace"), peak


# --- sizes never wrap ------------------------------------------------------------------------


def test_element_count_does_not_wrap() -> None:
    dims = [1 << 62, 4]
    assert int(np.prod(dims, dtype=np.int64)) == 0  # what the old size checks computed
    assert element_count(dims) == 1 << 64
    assert array_bytes(dims, 4) == 1 << 66
    with pytest.raises(ValueError):
        element_count([3, -1])


def test_format_size_of_huge_sizes() -> None:
    assert format_size(3 << 50) == "3.0 PiB"
    assert "EiB" in format_size(1 << 66)


def test_declared_shape_overflowing_int64_is_refused(tmp_path: Path) -> None:
    model = _save(declared_input(1 << 62), tmp_path / "model.onnx")
    result = CliRunner().invoke(main, ["audit", str(model), "--samples", "1", "--max-memory", "1G"])
    assert result.exit_code == 2, result.output
    assert re.search(r"would need \S+ EiB|needs at least \S+ EiB", result.stderr), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_model_tensors_counts_constant_shapes_and_rows() -> None:
    tensors = model_tensors(constant_of_shape(), "N")
    assert tensors.fixed >= BIG * 4
    assert tensors.largest == ("big", BIG * 4)
    assert tensors.per_row == 3 * 4 * 2  # scores and logits, float32 [N, 3] each


# --- the default budget ------------------------------------------------------------------------


def test_default_budget_names_the_limit_that_decided(monkeypatch: pytest.MonkeyPatch) -> None:
    from fimaudit import resources

    monkeypatch.setattr(resources, "_meminfo", lambda: 8 << 30)
    monkeypatch.setattr(resources, "_cgroup_headroom", lambda: 1 << 30)
    monkeypatch.setattr(resources, "_address_space_headroom", lambda: 2 << 30)
    budget = MemoryBudget.from_option(None)
    assert budget.limit == int((1 << 30) * resources.DEFAULT_SHARE)
    assert "cgroup" in budget.source
    monkeypatch.setattr(resources, "_address_space_headroom", lambda: 512 << 20)
    assert "RLIMIT_AS" in MemoryBudget.from_option(None).source


def test_cgroup_v2_and_v1_limits_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from fimaudit import resources

    (tmp_path / "memory.max").write_text("1073741824\n")
    (tmp_path / "memory.current").write_text("268435456\n")
    monkeypatch.setattr(resources, "_cgroup_dirs", lambda controller: [str(tmp_path)] if controller is None else [])
    assert resources._cgroup_headroom() == 768 << 20
    v1 = tmp_path / "v1"
    v1.mkdir()
    (v1 / "memory.limit_in_bytes").write_text(str(512 << 20))
    (v1 / "memory.usage_in_bytes").write_text(str(128 << 20))
    monkeypatch.setattr(resources, "_cgroup_dirs", lambda controller: [] if controller is None else [str(v1)])
    assert resources._cgroup_headroom() == 384 << 20
    (v1 / "memory.limit_in_bytes").write_text("9223372036854771712")  # v1's "no limit"
    assert resources._cgroup_headroom() is None


def test_address_space_limit_is_counted() -> None:
    code = (
        "import resource; resource.setrlimit(resource.RLIMIT_AS, (8 << 30, resource.RLIM_INFINITY));"
        "from fimaudit.resources import memory_limits; print(memory_limits()['the address-space limit (RLIMIT_AS)'])"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert 0 < int(out.stdout) < 8 << 30
    assert all(value >= 0 for value in memory_limits().values())


# --- refusals up front ---------------------------------------------------------------------------


def test_constant_of_shape_refused_before_running_with_a_low_peak(tmp_path: Path) -> None:
    model = _save(constant_of_shape(), tmp_path / "cos.onnx")
    code, stderr, peak = _run_measured(["audit", str(model), "--samples", "1", "--max-memory", "64M"])
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "--max-memory is 64.0 MiB" in lines[0]
    assert re.search(r"'big': 1\.1 GiB", lines[0]), lines[0]
    assert peak < 400 << 20, f"peak RSS {format_size(peak)}: the tensor was built before the refusal"


def test_jacobian_refuses_what_audit_refuses(tmp_path: Path) -> None:
    model = _save(constant_of_shape(), tmp_path / "cos.onnx")
    data = tmp_path / "x.npy"
    np.save(data, np.ones((2, 4), np.float32))
    runner = CliRunner()
    audit = runner.invoke(main, ["audit", str(model), "--data", str(data), "--max-memory", "64M"])
    jacobian = runner.invoke(
        main, ["jacobian", str(model), "--data", str(data), "--out", str(tmp_path / "J.npy"), "--max-memory", "64M"]
    )
    assert audit.exit_code == jacobian.exit_code == 2
    assert "'big': 1.1 GiB" in audit.stderr and "'big': 1.1 GiB" in jacobian.stderr, jacobian.stderr
    assert not (tmp_path / "J.npy").exists()


def test_jacobian_plans_its_jacobians(tmp_path: Path) -> None:
    """K x d = 200 x 20000: 96 MiB of float64 Jacobians do not fit 64M; both commands refuse."""
    model = _save(models.linear(features=20000, classes=200), tmp_path / "wide.onnx")
    data = tmp_path / "x.npy"
    np.save(data, np.ones((1, 20000), np.float32))
    runner = CliRunner()
    outputs = [
        runner.invoke(main, ["audit", str(model), "--data", str(data), "--max-memory", "64M", "--no-bounds"]),
        runner.invoke(main, ["jacobian", str(model), "--data", str(data), "--out", str(tmp_path / "J.npy"), "--max-memory", "64M"]),
    ]
    for result in outputs:
        assert result.exit_code == 2, result.output
        assert re.search(r"Jacobian [\d.]+ MiB.*--max-memory is 64\.0 MiB", result.stderr), result.stderr
    ok = runner.invoke(main, ["jacobian", str(model), "--data", str(data), "--out", str(tmp_path / "J.npy"), "--max-memory", "512M"])
    assert ok.exit_code == 0, ok.output
    assert np.load(tmp_path / "J.npy").shape == (1, 200, 20000)


def test_exact_with_200000_classes_is_refused_for_its_k_by_k_matrices(tmp_path: Path) -> None:
    weight = np.random.default_rng(0).standard_normal((4, 200_000)).astype(np.float32)
    model = _save(models.linear(features=4, classes=200_000, weight=weight), tmp_path / "many.onnx")
    result = CliRunner().invoke(
        main, ["audit", str(model), "--samples", "1", "--method", "exact", "--max-memory", "8G", "--no-bounds"]
    )
    assert result.exit_code == 2
    assert re.search(r"K x K matrices of the exact method \(K = 200000\) 1\.\d TiB", result.stderr), result.stderr


def test_refused_before_any_model_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fimaudit.runtime import ModelRunner

    def forbidden(self, *args, **kwargs):
        raise AssertionError("a session was created before the plan refused")

    monkeypatch.setattr(ModelRunner, "__post_init__", forbidden)
    weight = np.random.default_rng(0).standard_normal((4, 200_000)).astype(np.float32)
    model = _save(models.linear(features=4, classes=200_000, weight=weight), tmp_path / "many.onnx")
    with pytest.raises(ResourceError, match="K x K"):
        from fimaudit.audit import AuditConfig, run_audit

        run_audit(AuditConfig(model_path=str(model), samples=1, method="exact", max_memory=8 << 30, bounds=False))


def test_blackbox_buffer_beyond_the_budget_is_refused(tmp_path: Path) -> None:
    model = _save(models.linear(features=4, classes=1000), tmp_path / "k1000.onnx")
    result = CliRunner().invoke(
        main, ["audit", str(model), "--samples", "1", "--method", "blackbox", "--budget", "10000000", "--max-memory", "1G", "--no-bounds"]
    )
    assert result.exit_code == 2
    assert re.search(r"black-box sketch \(5000000 directions x K = 1000\) [\d.]+ GiB", result.stderr), result.stderr


def test_blackbox_within_the_budget_runs_and_chunks_by_the_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    from fimaudit.audit import AuditConfig, run_audit
    from fimaudit.runtime import ModelRunner

    seen: list[int] = []
    real = ModelRunner.run

    def recording(self, rows):
        seen.append(int(rows.shape[0]))
        return real(self, rows)

    monkeypatch.setattr(ModelRunner, "run", recording)
    config = AuditConfig(
        model_path=str(ROOT / "sample_models" / "mlp.onnx"), samples=1, method="blackbox", budget=400,
        max_memory=400 << 10, bounds=False, gradients="fd",
    )
    result = run_audit(config)
    assert result.samples[0].result.kind == "estimate"
    assert max(seen) < 400, "the black-box directions were not chunked by the planned batch"


def test_audit_needs_counts_kk_for_every_method() -> None:
    model = models.linear(features=4, classes=10)
    for method in ("exact", "blackbox", "lanczos", "hutchinson", "power"):
        needs = audit_needs(model, 4, 4, 1, 50_000, method=method, bounds=True)
        assert sum(needs.held.values()) >= 6 * 50_000**2 * 8  # the bounds' covariance at least


# --- item 7: clear messages --------------------------------------------------------------------------


def test_npy_header_whose_size_overflows(tmp_path: Path) -> None:
    path = tmp_path / "huge.npy"
    with path.open("wb") as stream:
        np.lib.format.write_array_header_1_0(stream, {"descr": "<f4", "fortran_order": False, "shape": (1 << 40, 1 << 40, 1 << 40)})
    result = CliRunner().invoke(main, ["audit", str(ROOT / "sample_models" / "mlp.onnx"), "--data", str(path)])
    assert result.exit_code == 2
    assert re.search(r"huge\.npy is not a readable \.npy array: its header declares shape .* more than any array can hold", result.stderr), result.stderr


def test_extra_input_with_zero_rows(tmp_path: Path) -> None:
    model = _save(models.two_inputs(), tmp_path / "two.onnx")
    names = [value.name for value in models.two_inputs().graph.input]
    main_name, extra_name = names[0], names[1]
    extra_shape = [d.dim_value or 1 for d in models.two_inputs().graph.input[1].type.tensor_type.shape.dim][1:]
    main_shape = [d.dim_value or 1 for d in models.two_inputs().graph.input[0].type.tensor_type.shape.dim][1:]
    data = tmp_path / "data.npz"
    np.savez(data, **{main_name: np.ones((2, *main_shape), np.float32), extra_name: np.ones((0, *extra_shape), np.float32)})
    result = CliRunner().invoke(main, ["audit", str(model), "--data", str(data), "--input", main_name])
    assert result.exit_code == 2, result.output
    assert f"data.npz['{extra_name}'] holds no rows" in result.stderr, result.stderr


@pytest.mark.parametrize("method", ["exact", "lanczos"])
def test_infinite_gradients_with_finite_scores(tmp_path: Path, method: str) -> None:
    model = _save(sqrt_head(), tmp_path / "sqrt.onnx")
    data = tmp_path / "zeros.npy"
    np.save(data, np.zeros((2, 4), np.float32))
    result = CliRunner().invoke(main, ["audit", str(model), "--data", str(data), "--gradients", "graph", "--method", method, "--no-bounds"])
    assert result.exit_code == 2, result.output
    assert "derivatives are NaN or Inf at sample 0" in result.stderr, result.stderr
