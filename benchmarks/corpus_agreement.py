"""Whole-model checks on real exports: family, output kind, gradient-rule coverage, and
graph-derived Jacobians and exact lambda_max against finite differences.

Why: the op-level rule tests (tests/autodiff) prove each rule; this shows that whole graphs as
real exporters emit them (both PyTorch exporters over torchvision architectures, skl2onnx,
paddle2onnx) differentiate correctly end to end, and lists every op that still has no rule.

    /work/venv/bin/python benchmarks/corpus_agreement.py [--corpus /work/corpus] [--samples 2]
        [--only resnet18 vit] [--with-samples] [--json out.json]

Columns: family (issue 5's recognition), output kind and how logits are taken, missing VJP/JVP
rules (preflight), J err = max |J_graph - J_fd| / max |J_fd| (worst sample), lam err =
|lambda_graph - lambda_fd| / lambda_fd (worst sample), seconds for the dense Jacobians of all
samples by each source. Where tools/corpus/torch_reference.py has written float64 PyTorch
autograd Jacobians (``reference_<arch>.npz``), "graph/ref" and "fd/ref" give the same J error of
each source against that reference: it tells which source is off when they disagree. Not a test: the corpus (tools/corpus/export_torchvision.py) is not
committed.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from fimaudit.audit import AuditConfig, intake, prepare_model
from fimaudit.gradients import make_source
from fimaudit.autodiff.build import missing_rules
from fimaudit.errors import FimauditError
from fimaudit.fisher.exact import exact_lambda_max
from fimaudit.graph.selection import LOGITS

ROOT = Path(__file__).resolve().parents[1]


def corpus_models(corpus: Path, only: list[str] | None) -> list[tuple[Path, Path, Path | None]]:
    """(model, data, reference) of the torchvision corpus, from its manifest (32x32 models only)."""
    manifest = corpus / "manifest.json"
    if not manifest.exists():
        return []
    document = json.loads(manifest.read_text())
    data = corpus / document["inputs"]["file"]
    pairs = []
    for entry in document["models"]:
        if entry["input_shape"][1:] != [3, 32, 32]:
            continue
        if only and not any(name in entry["file"] for name in only):
            continue
        reference = corpus / f"reference_{entry['arch']}.npz"
        pairs.append((corpus / entry["file"], data, reference if reference.exists() else None))
    return pairs


def committed_models(with_samples: bool) -> list[tuple[Path, Path, Path | None]]:
    """tests/models (tensor outputs; ZipMap variants have nothing to differentiate), sample_models."""
    pairs = []
    manifest = ROOT / "tests" / "models" / "manifest.json"
    if manifest.exists():
        for entry in json.loads(manifest.read_text())["models"]:
            if entry["output"] != "zipmap":
                pairs.append((ROOT / "tests" / "models" / entry["file"], ROOT / "tests" / "models" / entry["data"], None))
    if with_samples:
        samples = ROOT / "sample_models"
        for entry in json.loads((samples / "manifest.json").read_text())["models"]:
            pairs.append((samples / entry["file"], samples / "digits_test.npy", None))
    return pairs


def family_of(taken: Any) -> str:
    try:
        from fimaudit.graph.architecture import recognise_architecture
    except ImportError:
        return "n/a"
    try:
        return recognise_architecture(taken.loaded.proto, taken.selection.input_name).family
    except FimauditError as exc:
        return f"error: {exc}"


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    """Worst sample's max |got - want| / max |want| over Jacobians [N, K, d]."""
    return max(float(np.abs(g - w).max() / max(np.abs(w).max(), 1e-300)) for g, w in zip(got, want))


def check_model(model: Path, data: Path, samples: int, reference: Path | None = None) -> dict[str, Any]:
    """One row of the table; errors become a row too (the table must show every model)."""
    row: dict[str, Any] = {"model": model.name}
    inputs = np.load(data)[:samples]
    taken = intake(str(model))
    row["family"] = family_of(taken)
    prepared = prepare_model(taken, AuditConfig(model_path=str(model)), inputs[:1])
    selection = prepared.selection
    row["output"] = f"{selection.output_kind}/{selection.logits_transform}"
    row["classes"] = prepared.num_classes
    runner = prepared.runner
    row["missing_vjp"] = sorted({op for op, _ in missing_rules(runner.model, runner.input_name, LOGITS, "vjp")})
    row["missing_jvp"] = sorted({op for op, _ in missing_rules(runner.model, runner.input_name, LOGITS, "jvp")})
    fd = make_source("fd", prepared.runner, prepared.selection.sample_shape, prepared.num_classes).source
    started = time.perf_counter()
    differenced = fd.dense(inputs)
    row["fd_seconds"] = time.perf_counter() - started
    logits = fd.logits(inputs)
    row["lambda_fd"] = [exact_lambda_max(j, z).value for j, z in zip(differenced, logits)]
    truth = np.load(reference)["jacobians"][:samples] if reference is not None else None
    if truth is not None:
        row["fd_vs_reference"] = relative_error(differenced, truth)
    if row["missing_vjp"]:
        return row
    choice = make_source("auto", prepared.runner, prepared.selection.sample_shape, prepared.num_classes)
    if choice.kind != "graph":
        row["graph_error"] = choice.reason
        return row
    graph = choice.source
    started = time.perf_counter()
    exact = graph.dense(inputs)
    row["graph_seconds"] = time.perf_counter() - started
    row["lambda_graph"] = [exact_lambda_max(j, z).value for j, z in zip(exact, logits)]
    row["jacobian_error"] = relative_error(exact, differenced)
    if truth is not None:
        row["graph_vs_reference"] = relative_error(exact, truth)
    row["lambda_error"] = max(abs(g - f) / max(f, 1e-300) for g, f in zip(row["lambda_graph"], row["lambda_fd"]))
    return row


def _cell(value: Any, width: int, fmt: str = "{:.1e}") -> str:
    if value is None:
        text = "-"
    elif isinstance(value, float):
        text = fmt.format(value)
    else:
        text = str(value)
    return (text if not width or len(text) < width else text[: width - 2] + "~").ljust(width)


def table(rows: list[dict[str, Any]]) -> str:
    header = ("model", "family", "output", "J err", "lam err", "graph/ref", "fd/ref", "lam_max fd", "graph s", "fd s",
              "missing rules (vjp)")
    widths = (38, 12, 42, 9, 9, 10, 9, 11, 8, 8, 0)
    lines = ["".join(h.ljust(w) for h, w in zip(header, widths))]
    for row in rows:
        if "error" in row:
            lines.append(row["model"].ljust(widths[0]) + "ERROR " + row["error"])
            continue
        missing = ", ".join(row["missing_vjp"]) or ("(graph failed: " + row["graph_error"] + ")" if "graph_error" in row else "")
        lam = row.get("lambda_fd")
        lines.append("".join([
            _cell(row["model"], widths[0]), _cell(row["family"], widths[1]), _cell(row["output"], widths[2]),
            _cell(row.get("jacobian_error"), widths[3]), _cell(row.get("lambda_error"), widths[4]),
            _cell(row.get("graph_vs_reference"), widths[5]), _cell(row.get("fd_vs_reference"), widths[6]),
            _cell(float(np.median(lam)) if lam else None, widths[7], "{:.4g}"),
            _cell(row.get("graph_seconds"), widths[8], "{:.2f}"), _cell(row.get("fd_seconds"), widths[9], "{:.1f}"),
            missing,
        ]))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=Path("/work/corpus"))
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--only", nargs="*", help="substrings of file names to keep")
    parser.add_argument("--with-samples", action="store_true", help="also the bundled sample_models")
    parser.add_argument("--json", type=Path, help="write the rows as JSON")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    pairs = corpus_models(args.corpus, args.only) + [
        p for p in committed_models(args.with_samples) if not args.only or any(n in p[0].name for n in args.only)
    ]
    rows = []
    for model, data, reference in pairs:
        print(f"checking {model.name} ...", file=sys.stderr, flush=True)
        try:
            rows.append(check_model(model, data, args.samples, reference))
        except FimauditError as exc:
            rows.append({"model": model.name, "error": str(exc)[:300]})
    print(table(rows))
    missing = sorted({op for row in rows for op in row.get("missing_vjp", [])})
    missing_jvp = sorted({op for row in rows for op in row.get("missing_jvp", [])})
    print(f"\nops with no VJP rule on some model's differentiable path: {', '.join(missing) or 'none'}")
    print(f"ops with no JVP rule on some model's differentiable path: {', '.join(missing_jvp) or 'none'}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=float) + "\n")


if __name__ == "__main__":
    main()
