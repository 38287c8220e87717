"""Every lambda_max estimator side by side against exact: error, interval coverage and cost.

    /work/venv/bin/python benchmarks/estimators.py [--samples 16] [--repeats 5] [--budget 400]
        [--only mlp vgg] [--corpus /work/corpus] [--corpus-samples 8] [--gradients auto]

For each model, on the same samples: ``exact`` (the reference: K x K eigenproblem of the dense
Jacobian), then each registered estimator at its default budget (blackbox at ``--budget``
evaluations), and the reference code's two randomised estimators (benchmarks/paper_blackbox.py).
Randomised rows run ``--repeats`` seeds per sample. Columns:

  kind     the kinds reported (E exact, e estimate, L lower bound)
  |err|    median |value / exact - 1| (for lower bounds this is how far below they sit)
  ratio    median value / exact
  cov95    share of 95% intervals holding exact (estimates with a confidence level only)
  evals    median model evaluations per sample (rows through ONNX Runtime, as the source counts)
  prods    median operator products per sample
  ms       median milliseconds per sample
  /(tr/d)  median value / (trace(F) / d): the reference code's estimators track this

Sample models: 8x8 digits (d = 64, K = 10). The corpus (tools/corpus/export_torchvision.py,
3x32x32 inputs, d = 3072, random weights) is used when present. Gradients: graph where the
model's ops all have rules, else finite differences (``--gradients auto``). Every estimator gets
a fresh gradient source, so no estimator profits from another's cached Jacobian.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from paper_blackbox import paper_blackbox, paper_max_rayleigh  # noqa: E402

from fimaudit.audit import AuditConfig, intake, prepare_model  # noqa: E402
from fimaudit.gradients import make_source  # noqa: E402
from fimaudit.data import load_data  # noqa: E402
from fimaudit.errors import FimauditError  # noqa: E402
from fimaudit.fisher.blackbox import blackbox_lambda_max  # noqa: E402
from fimaudit.fisher.problem import SampleProblem  # noqa: E402
from fimaudit.fisher.registry import get_estimator  # noqa: E402
from fimaudit.fisher.result import SpectralResult  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_MODELS = ("mlp", "mlp_softmax", "binary_sigmoid", "vgg_small", "resnet_small", "densenet_small", "vit_small")
CORPUS_MODELS = ("resnet18_torchscript", "mobilenet_v3_small_torchscript", "densenet121_torchscript")

Run = Callable[[SampleProblem, np.random.Generator], SpectralResult]


@dataclass
class Row:
    name: str
    randomised: bool
    run: Run
    values: list[float] = field(default_factory=list)
    exact: list[float] = field(default_factory=list)
    trace_over_d: list[float] = field(default_factory=list)
    kinds: set[str] = field(default_factory=set)
    covered: list[bool] = field(default_factory=list)
    evaluations: list[int] = field(default_factory=list)
    products: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


def rows(budget: int) -> list[Row]:
    def registered(name: str, row_budget: int | None = None) -> Run:
        return lambda problem, rng: get_estimator(name)(problem, row_budget, rng)

    return [
        Row("auto", False, registered("auto")),
        Row("lanczos", True, registered("lanczos")),
        Row("power", True, registered("power")),
        Row("hutchinson (Hutch++)", True, registered("hutchinson")),
        Row(f"blackbox@{budget}", True, lambda problem, rng: blackbox_lambda_max(problem, budget, rng)),
        Row("paper black-box (100 dirs)", True, paper_blackbox),
        Row("paper 'Hutchinson' (max RQ)", True, paper_max_rayleigh),
    ]


def prepare(model: Path, data: Path, count: int, gradients: str):
    config = AuditConfig(model_path=str(model), data_path=str(data), samples=count, gradients=gradients)
    taken = intake(str(model))
    loaded = load_data(str(data), taken.selection, count, 0)
    prepared = prepare_model(taken, config, probe=loaded.inputs[:1], extra=loaded.extra_feeds)
    return prepared, loaded.inputs


def fresh_problems(prepared, inputs: np.ndarray, gradients: str, logits: np.ndarray | None) -> tuple[list[SampleProblem], str]:
    choice = make_source(gradients, prepared.runner, prepared.selection.sample_shape, prepared.num_classes)
    source, used = choice.source, choice.kind
    if logits is None:
        logits = source.logits(inputs)
    return [SampleProblem(sample=inputs[i], logits=logits[i], jacobian=source) for i in range(inputs.shape[0])], used


def record(row: Row, result: SpectralResult, exact: float, trace_over_d: float) -> None:
    row.values.append(result.value)
    row.exact.append(exact)
    row.trace_over_d.append(trace_over_d)
    row.kinds.add(result.kind)
    if result.interval is not None and result.confidence is not None:
        row.covered.append(result.interval[0] <= exact <= result.interval[1])
    row.evaluations.append(result.model_evaluations)
    row.products.append(result.matvecs)
    row.seconds.append(result.seconds)


def benchmark_model(label: str, model: Path, data: Path, count: int, repeats: int, budget: int, gradients: str) -> list[str]:
    prepared, inputs = prepare(model, data, count, gradients)
    problems, used = fresh_problems(prepared, inputs, gradients, None)
    logits = np.stack([p.logits for p in problems])
    reference = Row("exact (reference)", False, lambda problem, rng: get_estimator("exact")(problem, None, rng))
    exact, trace_over_d = [], []
    for problem in problems:
        result = reference.run(problem, np.random.default_rng(0))
        exact.append(result.value)
        trace_over_d.append(result.trace / problem.input_size)
        record(reference, result, result.value, trace_over_d[-1])
    table = [reference]
    for row in rows(budget):
        for seed in range(repeats if row.randomised else 1):
            # A fresh source per pass: a repeat must not reuse a Jacobian the first pass cached.
            fresh, _ = fresh_problems(prepared, inputs, gradients, logits)
            for index, problem in enumerate(fresh):
                rng = np.random.default_rng(1000 * seed + index)
                record(row, row.run(problem, rng), exact[index], trace_over_d[index])
        table.append(row)
    d, k = problems[0].input_size, problems[0].num_classes
    return [format_row(label if i == 0 else "", d, k, used, row) for i, row in enumerate(table)]


KIND_LETTERS = {"exact": "E", "estimate": "e", "lower_bound": "L", "upper_bound": "U"}
HEADER = f"{'model':<22} {'d':>5} {'K':>3} {'grad':>5}  {'estimator':<28} {'kind':>4} {'|err|':>7} {'ratio':>8} {'cov95':>6} {'evals':>6} {'prods':>5} {'ms':>7} {'/(tr/d)':>8}"


def format_row(label: str, d: int, k: int, gradients: str, row: Row) -> str:
    values, exact = np.array(row.values), np.array(row.exact)
    positive = exact > 0
    ratio = values[positive] / exact[positive]
    kinds = "".join(sorted(KIND_LETTERS[kind] for kind in row.kinds))
    coverage = f"{np.mean(row.covered):.2f}" if row.covered else "-"
    over_trace = np.median(values / np.array(row.trace_over_d)) if "paper" in row.name else None
    return (
        f"{label:<22} {d:>5} {k:>3} {gradients:>5}  {row.name:<28} {kinds:>4} {np.median(np.abs(ratio - 1)):>7.3f} "
        f"{np.median(ratio):>8.4f} {coverage:>6} {int(np.median(row.evaluations)):>6} {int(np.median(row.products)):>5} "
        f"{1000 * np.median(row.seconds):>7.1f} {'' if over_trace is None else f'{over_trace:.2f}':>8}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--budget", type=int, default=400, help="blackbox evaluations per sample")
    parser.add_argument("--gradients", default="auto", choices=["auto", "graph", "fd"])
    parser.add_argument("--only", nargs="*", help="substrings of model names to run")
    parser.add_argument("--corpus", type=Path, default=Path("/work/corpus"))
    parser.add_argument("--corpus-samples", type=int, default=8)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)

    jobs = [(name, ROOT / "sample_models" / f"{name}.onnx", ROOT / "sample_models" / "digits_test.npy", args.samples) for name in SAMPLE_MODELS]
    manifest = args.corpus / "manifest.json"
    if manifest.exists():
        inputs = args.corpus / json.loads(manifest.read_text())["inputs"]["file"]
        jobs += [(name, args.corpus / f"{name}.onnx", inputs, args.corpus_samples) for name in CORPUS_MODELS if (args.corpus / f"{name}.onnx").exists()]
    if args.only:
        jobs = [job for job in jobs if any(part in job[0] for part in args.only)]

    print(HEADER)
    print("-" * len(HEADER))
    for name, model, data, count in jobs:
        try:
            lines = benchmark_model(name, model, data, count, args.repeats, args.budget, args.gradients)
        except FimauditError as exc:
            print(f"{name:<22} skipped: {exc}")
            continue
        print("\n".join(lines), flush=True)
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
