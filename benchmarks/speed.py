"""Issue 12's numbers in one run: fimaudit against PyTorch, GFLOP/s against the machine's peak, bound share.

Why one script: a ratio only means something when both sides ran on the same machine at the
same moment (2 shared cores here), so every table row is measured side by side, interleaved
(benchmarks/jacobian_speed.py's ``time_interleaved``: each framework's block of samples back to
back after a rest, the blocks alternating; the fastest of ``--repeats`` runs per sample), with
the load average printed before and after.

Per model of the corpus (tools/corpus/export_torchvision.py, 3x32x32, K = 10):

- ``fimaudit ms``: exact lambda_max of one sample through the library path an audit runs
  (logits, the dense K x d Jacobian from the gradient graph, the K x K eigenproblem);
- ``torch ms``: the faster of PyTorch's per-class backward and batched backward paths on the
  same weights (the model rebuilt with the export's seeds), same eigenproblem;
- ``GFLOP/s``: (forward + K input-gradient passes) FLOPs of fimaudit's run over its time, with
  the FLOPs counted from the ONNX graph (2 x multiply-adds of Conv, ConvTranspose, Gemm and
  MatMul at batch 1; a VJP of a linear op costs what the op costs), against the peak of a
  2048 x 2048 float32 numpy GEMM on the same threads;
- lever columns (``--levers``): the same fimaudit path with one lever undone, to show what
  each pays: ``convT`` (every Conv adjoint as ConvTranspose, as before issue 12), ``kept`` (the
  gradient models combined, the forward re-run at every gradient run) and ``ext``
  (ONNX Runtime at ORT_ENABLE_EXTENDED, the level before issue 12, instead of ORT_ENABLE_ALL).

Each (model, exporter) row runs in a fresh process of this script when the table has more than
one (``pair_in_subprocess``): an audit chooses its ONNX Runtime thread mode before its first
session (``audit.plan_threads``: small kernels on the exact route get one thread per run and the
gradient rows in parts side by side), and the process keeps that mode for every later model.

``--group B`` (32 only) adds a table where B samples share a gradient run on both sides, as the
audit's exact route runs them (fimaudit/sample_groups.py, B <= 8): fimaudit's ``prefetch`` of the
group against PyTorch's per-class backward over the batch of B and its batched backward over
B x K rows; milliseconds per sample. A fixed-batch export (the dynamo ones, batch 1) gains
nothing from grouping on fimaudit's side: that is what its audit does too.

``--size 224`` (the 3x224x224, K = 1000 corpus, tools/corpus/export_torchvision.py ``--size 224
--classes 1000``, default ``--corpus /work/corpus224``): per model, one sample's lambda_max by
``--method auto`` through the audit's per-sample path (logits, then ``SampleAuditor``: the
estimator auto picks, on the sample's own random stream; at K = 1000 that is Lanczos on the
K x K side, one VJP-graph run and one JVP-graph run per product) against PyTorch running the
same estimator (benchmarks/torch_source.py: fimaudit's driver, same start vector, tolerance and
budget, torch computing the products on the same weights; two jvp modes, the faster counts).
Columns: both sides' products (they can differ by a restart: float32 products differ in the
last bits), the relative difference of lambda_max, and GFLOP = forward x (1 + jvp rows + vjp
rows) of fimaudit's run (the useful work: one forward, one linear pass per product row; the
forward its gradient graphs recompute is not counted, as in the 32x32 table), the forward's
FLOPs counted by PyTorch's FlopCounterMode on the same network (torch_source.forward_flops:
the graph counter above undercounts the TorchScript ViT). No CLI audits or lever columns at
this size.

Then ``fimaudit audit`` as a user runs it (a fresh process; ``--samples``, exact, graph
gradients): wall time with bounds and an empty cache, with bounds and the cache filled by that
run, and without bounds; the bound's own seconds from the JSON. Last, the README's sample
command end to end.

    PYTHONPATH=/work/main /work/venvs/torch/bin/python benchmarks/speed.py
        [--archs resnet18 ...] [--exporters torchscript dynamo] [--samples 4] [--repeats 3]
        [--threads 2] [--levers] [--no-audit]
    PYTHONPATH=/work/main /work/venvs/torch/bin/python benchmarks/speed.py --size 224
        [--archs resnet18 ...] [--exporters ...] [--samples 2] [--repeats 2] [--threads 2]
        [--torch-jvp forward double-backward]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "tools" / "corpus")]
from export_torchvision import ARCHITECTURES, NUM_CLASSES, build_model  # noqa: E402
from jacobian_speed import TORCH_PATHS, fimaudit_job, time_interleaved  # noqa: E402
from torch_source import JVP_MODES, TorchJacobian  # noqa: E402
from torch_source import forward_flops as torch_forward_flops  # noqa: E402

from fimaudit.audit import AuditConfig, intake, prepare_model  # noqa: E402
from fimaudit.fisher.exact import exact_lambda_max  # noqa: E402
from fimaudit.gradients import make_source  # noqa: E402
from fimaudit.gradients.base import InputJacobian  # noqa: E402
from fimaudit.sample_audit import SampleAuditor, SampleSettings  # noqa: E402

# The CLI runs as a user runs it: in fimaudit's own environment, not the benchmark's (torch's).
PRODUCT_PYTHON = ROOT / ".venv" / "bin" / "python"
README_COMMAND = ["audit", "sample_models/resnet_small.onnx", "--data", "sample_models/digits_test.npy",
                  "--report", "{tmp}/fimaudit-report.html", "--json", "{tmp}/fimaudit-report.json"]


def load() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()


def peak_gflops(threads: int, size: int = 2048, repeats: int = 5) -> float:
    """Best float32 GEMM rate of numpy (OpenBLAS) on ``threads`` threads: the practical peak.

    The limit is lifted for the GEMM: the fimaudit process keeps BLAS on one thread
    (blas_threads.py), which would halve the peak on two cores.
    """
    from threadpoolctl import threadpool_limits

    a = np.random.default_rng(0).standard_normal((size, size)).astype(np.float32)
    b = a.T.copy()
    best = np.inf
    with threadpool_limits(limits=threads, user_api="blas"):
        for _ in range(repeats):
            started = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def forward_flops(path: Path, sample_shape: tuple[int, ...]) -> float:
    """2 x multiply-adds of the linear ops of one forward pass at batch 1 (from inferred shapes)."""
    model = onnx.load(str(path))
    declared = model.graph.input[0].type.tensor_type.shape.dim
    for dim, size in zip(declared, (1, *sample_shape), strict=True):
        dim.Clear()
        dim.dim_value = size
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]}
    shapes.update({t.name: list(t.dims) for t in model.graph.initializer})
    constants = {t.name for t in model.graph.initializer}
    total = 0.0
    for node in inferred.graph.node:
        out = shapes.get(node.output[0])
        if node.op_type in ("Conv", "ConvTranspose") and out:
            weight = shapes[node.input[1]]
            reads = int(np.prod(weight[1:]))
            total += 2.0 * int(np.prod(out)) * reads if node.op_type == "Conv" else 0.0
            if node.op_type == "ConvTranspose":
                total += 2.0 * int(np.prod(shapes[node.input[0]])) * int(np.prod(weight[1:]))
        elif node.op_type in ("Gemm", "MatMul") and out:
            # Unknown dims (0 after a Reshape the inference could not follow) are the batch of 1.
            rows = int(np.prod([d or 1 for d in out[:-1]]))
            weight = shapes.get(node.input[1]) if node.input[1] in constants else None
            transposed = any(att.name == "transB" and att.i for att in node.attribute)
            if weight is not None and len(weight) == 2:
                inner = weight[1] if transposed else weight[0]
            else:
                a = shapes.get(node.input[0]) or [0]
                inner = a[-1]
            total += 2.0 * rows * (out[-1] or 1) * inner
    return total


@contextlib.contextmanager
def lever_undone(lever: str) -> Iterator[None]:
    """Undo one lever of issue 12 while sessions are built (benchmark-only patching)."""
    import onnxruntime as ort

    import fimaudit.autodiff.rules.linear as linear
    import fimaudit.gradients.graph as graph_gradients
    import fimaudit.runtime as runtime

    saved_adjoint, saved_options = linear._adjoint_as_conv, runtime._session_options
    saved_split = graph_gradients.split_gradient_model
    if lever == "convT":
        linear._adjoint_as_conv = lambda *args, **kwargs: None  # type: ignore[assignment]
    elif lever == "kept":
        graph_gradients.split_gradient_model = lambda *args, **kwargs: None  # type: ignore[assignment]
    elif lever == "ext":
        def options(threads: int | None) -> ort.SessionOptions:
            chosen = saved_options(threads)
            chosen.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
            return chosen
        runtime._session_options = options  # type: ignore[assignment]
    try:
        yield
    finally:
        linear._adjoint_as_conv, runtime._session_options = saved_adjoint, saved_options
        graph_gradients.split_gradient_model = saved_split


@contextlib.contextmanager
def session_calls_timed(seen: Callable[[bool, float], None]) -> Iterator[None]:
    """Every gradient-graph session call made inside timed: ``seen(forward_half, seconds)``.

    A forward half is the call with more than two outputs (it returns its kept tensors); the
    gradient halves return one. Benchmark-only patching of ``gradients/graph.run_session_parts``.
    """
    import fimaudit.gradients.graph as graph_gradients

    real = graph_gradients.run_session_parts

    def timed(session: Any, outputs: list[str], parts: list[dict], timeout: float | None) -> list[list[Any]]:
        started = time.perf_counter()
        result = real(session, outputs, parts, timeout)
        seen(len(outputs) > 2, time.perf_counter() - started)
        return result

    graph_gradients.run_session_parts = timed  # type: ignore[assignment]
    try:
        yield
    finally:
        graph_gradients.run_session_parts = real  # type: ignore[assignment]


def torch_jobs(name: str, inputs: np.ndarray) -> dict[str, Callable[[np.ndarray], float]]:
    by_name = {arch.name: arch for arch in ARCHITECTURES}
    model = build_model(by_name[name], NUM_CLASSES, inputs)
    jobs = {}
    for label in ("torch per-class", "torch batched"):
        path = TORCH_PATHS[label]

        def job(sample: np.ndarray, path=path) -> float:
            jacobian, logits = path(model, sample)
            return exact_lambda_max(jacobian.astype(np.float64), logits.astype(np.float64),
                                    with_eigenvector=False).value
        jobs[label] = job
    return jobs


def torch_group_per_class(model: torch.nn.Module, group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """B samples in one forward pass, then one backward pass per class: Jacobians [B, K, d]."""
    x = torch.from_numpy(group).requires_grad_(True)
    z = model(x)
    k = z.shape[1]
    rows = [torch.autograd.grad(z[:, c].sum(), x, retain_graph=c < k - 1)[0].reshape(group.shape[0], -1)
            for c in range(k)]
    return torch.stack(rows, dim=1).numpy(), z.detach().numpy()


def torch_group_batched(model: torch.nn.Module, group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each of B samples repeated K times, one backward pass of sum_b,k z_k(x_bk): Jacobians [B, K, d]."""
    b, k = group.shape[0], NUM_CLASSES
    x = torch.from_numpy(np.repeat(group, k, axis=0)).requires_grad_(True)
    z = model(x)
    picked = z.reshape(b, k, k).diagonal(dim1=1, dim2=2).sum()
    (gradient,) = torch.autograd.grad(picked, x)
    return gradient.reshape(b, k, -1).numpy(), z.reshape(b, k, k)[:, 0].detach().numpy()


def group_jobs(name: str, path: Path, all_inputs: np.ndarray, threads: int) -> dict[str, Callable[[np.ndarray], float]]:
    """Jobs over a group of B samples (``--group``), as the audit's exact route runs them.

    fimaudit: ``GraphJacobian.prefetch`` of the group (one gradient run over B samples x K
    cotangents, fimaudit/sample_groups.py), then each sample's exact lambda_max; PyTorch: the
    same B samples through its per-class and its batched backward paths. Each job returns the
    sum of the group's lambda_max.
    """
    by_name = {arch.name: arch for arch in ARCHITECTURES}
    model = build_model(by_name[name], NUM_CLASSES, all_inputs)
    jobs: dict[str, Callable[[np.ndarray], float]] = {}
    for label, path_of in (("torch per-class", torch_group_per_class), ("torch batched", torch_group_batched)):
        def job(group: np.ndarray, path_of=path_of) -> float:
            jacobians, logits = path_of(model, group)
            return sum(exact_lambda_max(j.astype(np.float64), z.astype(np.float64), with_eigenvector=False).value
                       for j, z in zip(jacobians, logits, strict=True))
        jobs[label] = job
    source = graph_source(path, all_inputs[:1], threads)

    def ours(group: np.ndarray) -> float:
        source.prefetch(group)
        logits = source.logits(group)
        total = sum(exact_lambda_max(source.dense(group[i : i + 1])[0], logits[i], with_eigenvector=False).value
                    for i in range(group.shape[0]))
        source.prefetch(group[:0])
        return total

    jobs["fimaudit"] = ours
    return jobs


# ------------------------------------------------------------------ 3x224x224, K = 1000: --method auto

LARGE_CLASSES = 1000


def graph_source(path: Path, probe: np.ndarray, threads: int) -> InputJacobian:
    """fimaudit's gradient-graph source for ``path``, prepared as an audit prepares it."""
    config = AuditConfig(model_path=str(path), gradients="graph")
    prepared = prepare_model(intake(str(path)), config, probe)
    prepared.runner = dataclasses.replace(prepared.runner, threads=threads)
    return make_source("graph", prepared.runner, prepared.selection.sample_shape, prepared.num_classes).source


def auto_job(
    source: InputJacobian, inputs: np.ndarray, record: list[dict], before: Callable[[], None] | None = None
) -> Callable[[np.ndarray], float]:
    """One sample's lambda_max as the audit's per-sample loop computes it with ``--method auto``.

    Logits, then ``SampleAuditor.audit`` (the estimator auto picks, sample i's own random stream
    of seed 0, the audit's wrappers, the eigenvector lifted to input space). ``record`` gets what
    ran: method, products, jvp/vjp rows, whether it converged. ``before`` runs first (the torch
    source forgets its per-sample forward pass, so that a repeat pays it again as an audit would).
    """
    auditor = SampleAuditor(source, SampleSettings(method="auto", budget=None, seed=0))
    index_of = {row.tobytes(): index for index, row in enumerate(inputs)}

    def job(sample: np.ndarray) -> float:
        if before is not None:
            before()
        index = index_of[sample.tobytes()]
        logits = source.logits(sample[None])[0]
        result = auditor.audit(index, sample, logits, None).result
        record.append({"index": index, "value": result.value, "kind": result.kind, "matvecs": result.matvecs,
                       "method": result.diagnostics.get("method"), "converged": result.diagnostics.get("converged"),
                       "rows": int(result.diagnostics.get("jvp_rows", 0)) + int(result.diagnostics.get("vjp_rows", 0))})
        return result.value

    return job


def model_arguments(doc: str, **options: int | float) -> tuple[argparse.Namespace, np.ndarray]:
    """The common start of the scripts that study one corpus model: options parsed, inputs loaded.

    One shared ONNX Runtime pool first (as fimaudit's CLI runs); then --model, --inputs,
    --threads and one ``--name`` per keyword of ``options`` (typed and defaulted by its value).
    """
    share_ort_pool()
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("/work/corpus224/vgg11_bn_dynamo.onnx"))
    parser.add_argument("--inputs", type=Path, default=None, help="default: the corpus inputs beside the model")
    parser.add_argument("--threads", type=int, default=2)
    for name, default in options.items():
        parser.add_argument(f"--{name}", type=type(default), default=default)
    args = parser.parse_args()
    return args, corpus_inputs(args.model, args.inputs)


def corpus_inputs(model: Path, given: Path | None = None, count: int = 4) -> np.ndarray:
    """The first ``count`` inputs of ``given``, else of the corpus beside ``model`` (3x224x224 or 3x32x32)."""
    side = "224" if "224" in str(model.parent) else "32"
    return np.load(given or model.parent / f"inputs_3x{side}x{side}.npy")[:count]


def prime(source: InputJacobian, sample: np.ndarray) -> None:
    """One vjp and one jvp on a point that is not a benchmark sample: sessions built, threads up."""
    source.vjp(sample, np.ones((1, source.num_classes)))
    source.jvp(sample, np.ones((1, source.input_size)))


def large_table(args: argparse.Namespace, peak: float) -> None:
    """The 3x224x224, K = 1000 table (see the module doc): fimaudit's auto against torch's same estimator."""
    corpus = args.corpus if args.corpus is not None else Path("/work/corpus224")
    side = args.size
    if args.samples < 2:
        # One sample would run twice in a row (the repeats), and fimaudit's source would reuse its
        # kept forward passes and logits there, which an audit never does (time_interleaved's doc).
        raise SystemExit("--size 224 needs --samples 2 or more")
    all_inputs = np.load(corpus / f"inputs_3x{side}x{side}.npy")
    inputs = all_inputs[: args.samples]
    by_name = {arch.name: arch for arch in ARCHITECTURES}
    torch_labels = [f"torch {mode}" for mode in args.torch_jvp]
    short = {"torch forward": "fwd-mode", "torch double-backward": "dbl-bwd"}
    header = (f"{'model':20s} {'exporter':11s} {'method':8s} {'fim ms':>9s} " + " ".join(
        f"{short[label] + ' ms':>13s}" for label in torch_labels)
        + f" {'ratio':>6s} {'lam diff':>8s} {'products f/t':>12s} {'GFLOP':>7s} {'GFLOP/s':>7s} {'%peak':>6s}")
    rows = []
    for name in args.archs:
        # Built once per architecture (the export's seeds, calibrated on all of the corpus inputs).
        model = build_model(by_name[name], LARGE_CLASSES, all_inputs)
        for exporter in args.exporters:
            path = corpus / f"{name}_{exporter}.onnx"
            if not path.exists():
                rows.append(f"{name:20s} {exporter:11s} missing: {path} (see the corpus manifest)")
                print(rows[-1], file=sys.stderr, flush=True)
                continue
            elsewhere = 0.5 * all_inputs[0]
            records: dict[str, list[dict]] = {"fimaudit": [], **{label: [] for label in torch_labels}}
            fimaudit = graph_source(path, inputs[:1], args.threads)
            prime(fimaudit, elsewhere)
            jobs = {"fimaudit": auto_job(fimaudit, inputs, records["fimaudit"])}
            refused = []
            for mode, label in zip(args.torch_jvp, torch_labels, strict=True):
                source = TorchJacobian(model, inputs.shape[1:], LARGE_CLASSES, mode)
                try:
                    prime(source, elsewhere)
                except RuntimeError as exc:  # e.g. no double backward of hardsigmoid (MobileNetV3)
                    refused.append(f"{mode}: {str(exc).splitlines()[0]}")
                    continue
                jobs[label] = auto_job(source, inputs, records[label], before=source.forget)
            seconds, values = time_interleaved(jobs, inputs, args.repeats, 0)
            del jobs, fimaudit
            gc.collect()
            ran = [label for label in torch_labels if label in seconds]
            if not ran:
                rows.append(f"{name:20s} {exporter:11s} no torch jvp mode ran: {'; '.join(refused)}")
                print(rows[-1], file=sys.stderr, flush=True)
                continue
            faster = min(seconds[label] for label in ran)
            diff = max(abs(a - b) / abs(b) for label in ran
                       for a, b in zip(values["fimaudit"], values[label], strict=True))
            ours = records["fimaudit"]
            theirs = [entry for label in ran for entry in records[label]]
            flops = torch_forward_flops(model, inputs.shape[1:]) * (1 + np.mean([entry["rows"] for entry in ours]))
            rate = flops / seconds["fimaudit"] / 1e9
            methods = "/".join(sorted({str(entry["method"]) for entry in ours}))
            products = (f"{np.mean([e['matvecs'] for e in ours]):.0f}/"
                        f"{np.mean([e['matvecs'] for e in theirs]):.0f}")
            unconverged = sum(not entry["converged"] for entry in ours + theirs if entry["method"] != "exact")
            rows.append(f"{name:20s} {exporter:11s} {methods:8s} {seconds['fimaudit'] * 1e3:9.0f} "
                        + " ".join(f"{seconds[label] * 1e3:13.0f}" if label in seconds else f"{'-':>13s}"
                                   for label in torch_labels)
                        + f" {seconds['fimaudit'] / faster:6.2f} {diff:8.1e} {products:>12s} {flops / 1e9:7.1f} "
                        f"{rate:7.1f} {100 * rate / peak:5.1f}%"
                        + (f"  ({unconverged} runs not converged: lower bounds)" if unconverged else "")
                        + "".join(f"  (torch {reason})" for reason in refused))
            print(rows[-1], file=sys.stderr, flush=True)
        del model
        gc.collect()
    print(header)
    print("\n".join(rows))
    print("fwd-mode / dbl-bwd: torch's J v by forward-mode AD / by the double-backward trick (J^T u from one "
          "kept forward pass in both); ratio: fimaudit / the faster torch jvp mode (below 1: fimaudit faster); "
          "lam diff: max relative difference of lambda_max against either torch mode; products: mean Lanczos "
          "products per sample (fimaudit / torch); GFLOP: forward x (1 + jvp rows + vjp rows) of fimaudit's run")


def cli(arguments: list[str], threads: int, cache_home: Path) -> tuple[float, int, str]:
    """Run ``fimaudit ARGS`` in a fresh process: (wall seconds, exit code, last line)."""
    env = {**os.environ, "XDG_CACHE_HOME": str(cache_home), "OMP_NUM_THREADS": str(threads),
           "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    done = subprocess.run([str(PRODUCT_PYTHON), "-m", "fimaudit", *arguments], capture_output=True, text=True,
                          env=env, cwd=ROOT)
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    return time.perf_counter() - started, done.returncode, lines[-1] if lines else ""


def audit_rows(model: Path, samples: int, threads: int) -> dict[str, float | str | None]:
    """Wall time of `fimaudit audit` with bounds (empty cache, then filled) and without; bound seconds.

    ``bound s``: what the audit spent in the bounds after its samples (waiting for the global stage,
    which runs on a thread of its own from the start, and the per-sample bounds); ``global s``: the
    global stage's own seconds, wherever they ran.
    """
    row: dict[str, float | str | None] = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = ["audit", str(model), "--samples", str(samples), "--method", "exact", "--gradients", "graph",
                "--json", f"{tmp}/a.json"]
        for label, extra in (("cold", []), ("cached", []), ("no bounds", ["--no-bounds"])):
            seconds, code, last = cli(base + extra, threads, Path(tmp) / "cache")
            row[f"{label} s"] = seconds if code in (0, 1) else None
            if code not in (0, 1) or not Path(f"{tmp}/a.json").exists():
                row["error"] = last[:160]
                continue
            document = json.loads(Path(f"{tmp}/a.json").read_text())
            bound = document.get("bound") or {}
            details = bound.get("details", bound)
            row[f"{label} bound s"] = details.get("seconds")
            row[f"{label} global s"] = details.get("global_seconds")
    return row


def grouped_table(args: argparse.Namespace, all_inputs: np.ndarray) -> None:
    """Per-sample milliseconds when B samples share a gradient run, both sides (``--group B``)."""
    size = args.group
    count = max(1, args.samples // size) * size
    groups = all_inputs[:count].reshape(count // size, size, *all_inputs.shape[1:])
    print(f"\ngroups of {size} samples per gradient run ({count // size} groups, best of {args.repeats}, interleaved; "
          "ms per sample)")
    print(f"{'model':20s} {'exporter':11s} {'fim ms':>8s} {'per-class':>9s} {'batched':>8s} {'ratio':>6s} "
          f"{'lam diff':>8s}")
    for name in args.archs:
        for exporter in args.exporters:
            path = args.corpus / f"{name}_{exporter}.onnx"
            jobs = group_jobs(name, path, all_inputs, args.threads)
            seconds, values = time_interleaved(jobs, groups, args.repeats, 1)
            del jobs
            gc.collect()
            faster = min(seconds["torch per-class"], seconds["torch batched"])
            diff = max(abs(a - b) / b for a, b in zip(values["fimaudit"], values["torch per-class"], strict=True))
            print(f"{name:20s} {exporter:11s} {seconds['fimaudit'] / size * 1e3:8.1f} "
                  f"{seconds['torch per-class'] / size * 1e3:9.1f} {seconds['torch batched'] / size * 1e3:8.1f} "
                  f"{seconds['fimaudit'] / faster:6.2f} {diff:8.1e}", flush=True)


def share_ort_pool() -> None:
    """One ONNX Runtime pool for this process, as the fimaudit command has (cli.entry).

    A checkout from before fimaudit/ort_threads.py (an A/B root on PYTHONPATH) keeps its
    per-session pools.
    """
    try:
        from fimaudit import ort_threads
    except ImportError:
        return
    ort_threads.share_process_pool()


def pair_row(name: str, exporter: str, args: argparse.Namespace, inputs: np.ndarray, all_inputs: np.ndarray,
             levers: list[str], peak: float) -> str:
    """The 3x32x32 table's row of one (model, exporter): fimaudit and torch timed side by side."""
    # At most three fimaudit sessions of a model are alive (VGG-11 is 515 MB a copy).
    jobs = torch_jobs(name, all_inputs)
    path = args.corpus / f"{name}_{exporter}.onnx"
    jobs[exporter] = fimaudit_job(path, inputs[:1], args.threads)
    for lever in levers if name in args.lever_archs else []:
        with lever_undone(lever):
            jobs[f"{exporter} {lever}"] = fimaudit_job(path, inputs[:1], args.threads)
    seconds, values = time_interleaved(jobs, inputs, args.repeats, 1, warm_block=True)
    del jobs
    gc.collect()
    faster = min(seconds["torch per-class"], seconds["torch batched"])
    flops = forward_flops(path, inputs.shape[1:]) * (1 + NUM_CLASSES)
    rate = flops / seconds[exporter] / 1e9
    diff = max(abs(a - b) / b for a, b in zip(values[exporter], values["torch per-class"], strict=True))
    return (f"{name:20s} {exporter:11s} {seconds[exporter] * 1e3:8.1f} {faster * 1e3:9.1f} "
            f"{seconds[exporter] / faster:6.2f} {diff:8.1e} {flops / 1e9:6.2f} {rate:7.1f} "
            f"{100 * rate / peak:5.1f}%"
            + "".join(f" {seconds[f'{exporter} {lever}'] * 1e3:9.1f}" if f"{exporter} {lever}" in seconds
                      else f" {'-':>9s}" for lever in levers))


_ROW_MARK = "SPEED_ROW\t"


def pair_in_subprocess(name: str, exporter: str, args: argparse.Namespace) -> str:
    """``pair_row`` in a fresh process of this script (its row comes back on a marked line)."""
    command = [sys.executable, __file__, "--archs", name, "--exporters", exporter, "--no-audit", "--pair-only",
               "--samples", str(args.samples), "--repeats", str(args.repeats), "--threads", str(args.threads),
               "--corpus", str(args.corpus)] + (["--levers", "--lever-archs", *args.lever_archs] if args.levers else [])
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    marked = [line[len(_ROW_MARK):] for line in done.stdout.splitlines() if line.startswith(_ROW_MARK)]
    if done.returncode or not marked:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return f"{name:20s} {exporter:11s} failed: {tail[:100]}"
    return marked[0]


def main() -> None:
    share_ort_pool()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=None,
                        help="default /work/corpus (/work/corpus224 with --size 224)")
    parser.add_argument("--size", type=int, default=32, choices=[32, 224],
                        help="32: the exact K = 10 table and the audits; 224: the K = 1000 --method auto table")
    parser.add_argument("--archs", nargs="*", default=[a.name for a in ARCHITECTURES])
    parser.add_argument("--exporters", nargs="*", default=["torchscript", "dynamo"])
    parser.add_argument("--torch-jvp", nargs="+", choices=JVP_MODES, default=list(JVP_MODES),
                        help="--size 224: PyTorch's J v modes timed (default both; the faster counts)")
    parser.add_argument("--samples", type=int, default=None, help="default 4 (2 with --size 224)")
    parser.add_argument("--repeats", type=int, default=None, help="default 3 (2 with --size 224)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--levers", action="store_true", help="also time fimaudit with each lever undone")
    parser.add_argument("--lever-archs", nargs="*", default=["resnet18", "densenet121", "mobilenet_v3_small"],
                        help="the models the lever columns are measured on (memory: three sessions each)")
    parser.add_argument("--no-audit", action="store_true", help="skip the CLI audits")
    parser.add_argument("--only-audit", action="store_true", help="only the CLI audits (no speed table)")
    parser.add_argument("--audit-samples", type=int, default=16)
    parser.add_argument("--pair-only", action="store_true", help=argparse.SUPPRESS)  # pair_in_subprocess
    parser.add_argument("--group", type=int, default=1,
                        help="32 only: also time groups of this many samples per gradient run on both sides "
                             "(the audit's exact route differentiates groups of up to 8); all models in this "
                             "process, so in the thread mode the first one chose (audit.plan_threads)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    torch.set_num_threads(args.threads)
    large = args.size != 32
    args.samples = args.samples or (2 if large else 4)
    args.repeats = args.repeats or (2 if large else 3)
    print(f"load before: {load()} on {os.cpu_count()} CPUs; torch {torch.__version__}, onnxruntime "
          f"{__import__('onnxruntime').__version__}, {args.threads} threads")
    peak = peak_gflops(args.threads)
    print(f"peak: {peak:.1f} GFLOP/s (float32 numpy GEMM 2048^3, best of 5)")
    if large:
        large_table(args, peak)
        print(f"load after: {load()}")
        return
    args.corpus = args.corpus or Path("/work/corpus")
    all_inputs = np.load(args.corpus / "inputs_3x32x32.npy")
    inputs = all_inputs[: args.samples]
    levers = ["convT", "kept", "ext"] if args.levers else []
    if args.pair_only:
        print(_ROW_MARK + pair_row(args.archs[0], args.exporters[0], args, inputs, all_inputs, levers, peak))
        return
    header = (f"{'model':20s} {'exporter':11s} {'fim ms':>8s} {'torch ms':>9s} {'ratio':>6s} {'lam diff':>8s} "
              f"{'GFLOP':>6s} {'GFLOP/s':>7s} {'%peak':>6s}" + "".join(f" {lever + ' ms':>9s}" for lever in levers))
    rows = []
    pairs = [] if args.only_audit else [(name, exporter) for name in args.archs for exporter in args.exporters]
    for name, exporter in pairs:
        if len(pairs) > 1:
            # Each (model, exporter) in a process of its own, as each audit is: the process's
            # ONNX Runtime pool is made for the first model it opens (audit.plan_threads).
            rows.append(pair_in_subprocess(name, exporter, args))
        else:
            rows.append(pair_row(name, exporter, args, inputs, all_inputs, levers, peak))
        print(rows[-1], file=sys.stderr, flush=True)
    print(header)
    print("\n".join(rows))
    print("ratio: fimaudit / the faster of torch per-class and torch batched (below 1: fimaudit faster); "
          "lam diff: max relative difference of lambda_max against torch per-class")
    if args.group > 1 and not args.only_audit:
        grouped_table(args, all_inputs)
    if not args.no_audit:
        print(f"\nfimaudit audit --samples {args.audit_samples} --method exact --gradients graph "
              "(fresh process; cold: empty cache, cached: second run)")
        print(f"{'model':34s} {'cold s':>7s} {'bound s':>7s} {'share':>6s} {'global s':>8s} {'cached s':>8s} "
              f"{'bound s':>7s} {'share':>6s} {'no-bounds s':>11s}")
        for name in args.archs:
            for exporter in args.exporters:
                row = audit_rows(args.corpus / f"{name}_{exporter}.onnx", args.audit_samples, args.threads)
                if "error" in row:
                    print(f"{name + '_' + exporter:34s} error: {row['error']}")
                    continue
                cold, cold_bound = row["cold s"], row["cold bound s"] or 0.0
                warm, warm_bound = row["cached s"], row["cached bound s"] or 0.0
                print(f"{name + '_' + exporter:34s} {cold:7.1f} {cold_bound:7.2f} {cold_bound / cold:6.0%} "
                      f"{row['cold global s'] or 0.0:8.2f} {warm:8.1f} {warm_bound:7.2f} {warm_bound / warm:6.0%} "
                      f"{row['no bounds s']:11.1f}")
        print("bound s: seconds the audit spent in the bounds after its samples (waiting for their global stage, "
              "which runs beside it from the start, included); global s: that stage's own seconds")
        with tempfile.TemporaryDirectory() as tmp:
            command = [part.format(tmp=tmp) for part in README_COMMAND]
            for label in ("cold cache", "warm cache"):
                seconds, code, last = cli(command, args.threads, Path(tmp) / "cache")
                print(f"README command ({label}): {seconds:.2f} s, exit {code}: {last[:120]}")
    print(f"load after: {load()}")


if __name__ == "__main__":
    main()
