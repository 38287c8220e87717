"""The exporter corpus (tests/corpus) audited end to end, against each framework's float64 reference.

Why: issue 16's "What must show": exports the team made itself from PyTorch (both exporters and
opset 9), TensorFlow/Keras, Paddle, JAX/Flax, scikit-learn and Hugging Face transformers, each
audited through the CLI with graph gradients (``audit --gradients graph --method exact``), its
lambda_max and graph Jacobian compared with the Jacobian the framework itself computed in float64
(tools/corpus/export_*.py). The test (tests/test_exporter_corpus.py) asserts the same with
tolerances; this prints the measured numbers in one table.

    .venv/bin/python benchmarks/exporter_corpus.py [--only keras paddle] [--json out.json]

Columns: exit code of the audit; lam err = max over samples of |lambda_fimaudit - lambda_ref| /
lambda_ref; J err = max over samples of ||J_graph - J_ref||_F / ||J_ref||_F, where J_ref is the
framework's Jacobian of the pre-softmax scores, or (I - 1 p^T) of it when fimaudit's logits are
log p (marked "logp"); grad check = the audit's gradient check (finite differences and the adjoint
identity); audit s = wall seconds of the whole CLI audit (model load, gradient graphs, the check,
bounds, JSON). For the text classifier the audit is ``--wrt embeddings`` (J err: no jacobian
command in embedding space, "-").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from click.testing import CliRunner

from fimaudit.cli import main as cli

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "corpus"


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def centred(jacobians: np.ndarray, logits: np.ndarray) -> np.ndarray:
    flat = jacobians.reshape(jacobians.shape[0], jacobians.shape[1], -1).astype(np.float64)
    return flat - np.einsum("nk,nkd->nd", softmax(logits), flat)[:, None, :]


def frobenius_error(got: np.ndarray, want: np.ndarray) -> float:
    got = got.reshape(got.shape[0], -1).astype(np.float64)
    want = want.reshape(want.shape[0], -1)
    return float((np.linalg.norm(got - want, axis=1) / np.linalg.norm(want, axis=1)).max())


def check(entry: dict[str, Any], workdir: Path) -> dict[str, Any]:
    model, data = str(CORPUS / entry["file"]), str(CORPUS / entry["data"])
    with np.load(CORPUS / entry["reference"]) as stored:
        reference = {key: stored[key] for key in stored.files}
    out = workdir / f"{entry['name']}.json"
    wrt = entry.get("wrt", "input")
    args = ["audit", model, "--data", data, "--samples", str(entry["num_samples"]), "--gradients", "graph",
            "--method", "exact", "--fail-above", "1e30", "--json", str(out)]
    if wrt != "input":
        args += ["--wrt", wrt]
    started = time.perf_counter()
    result = CliRunner().invoke(cli, args)
    row: dict[str, Any] = {"model": entry["name"], "exporter": entry["exporter_family"], "opset": entry["opset"],
                           "K": entry["num_classes"], "d": entry["input_size"], "exit": result.exit_code,
                           "audit_seconds": time.perf_counter() - started}
    if not out.exists():
        row["error"] = result.output.strip().splitlines()[-1] if result.output.strip() else "no output"
        return row
    document = json.loads(out.read_text())
    got = np.array([s["lambda_max"] for s in document["samples"]])
    row["lambda_error"] = float(np.max(np.abs(got - reference["lambda_max"]) / reference["lambda_max"]))
    row["lambda_median"] = float(np.median(reference["lambda_max"]))
    row["gradients"] = document["method"]["gradients"]
    row["gradient_check"] = document["gradient_check"]["status"]
    row["fd_check"] = document["gradient_check"].get("finite_differences", {}).get("status")
    row["adjoint_check"] = document["gradient_check"].get("adjoint", {}).get("status")
    if wrt == "input":
        jacobian = workdir / f"{entry['name']}_J.npy"
        done = CliRunner().invoke(cli, ["jacobian", model, "--data", data, "--out", str(jacobian), "--gradients", "graph"])
        if done.exit_code == 0:
            got_j, want_j, logits = np.load(jacobian), reference["jacobian"], reference["logits"]
            as_scores = frobenius_error(got_j, want_j)
            as_log_p = frobenius_error(got_j, centred(want_j, logits))
            row["jacobian_error"] = min(as_scores, as_log_p)
            row["jacobian_as"] = "z" if as_scores <= as_log_p else "logp"
    return row


def table(rows: list[dict[str, Any]]) -> str:
    header = ("model", "exporter", "opset", "K", "d", "exit", "lam_max (median)", "lam err", "J err", "grad check (fd/adjoint)", "audit s")
    widths = (28, 26, 6, 4, 6, 5, 17, 9, 14, 26, 7)
    lines = ["".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    for row in rows:
        def fmt(key: str, spec: str = "{:.1e}") -> str:
            return spec.format(row[key]) if row.get(key) is not None else "-"
        jacobian = fmt("jacobian_error") + (" (logp)" if row.get("jacobian_as") == "logp" else "")
        checkcell = (f"{row['gradient_check']} ({row['fd_check']}/{row['adjoint_check']})"
                     if "gradient_check" in row else row.get("error", "-")[:60])
        cells = (row["model"], row["exporter"], str(row["opset"]), str(row["K"]), str(row["d"]), str(row["exit"]),
                 fmt("lambda_median", "{:.4g}"), fmt("lambda_error"), jacobian, checkcell, fmt("audit_seconds", "{:.1f}"))
        lines.append("".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip())
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="substrings of model names to keep")
    parser.add_argument("--json", type=Path, help="write the rows as JSON")
    args = parser.parse_args()
    entries = json.loads((CORPUS / "manifest.json").read_text())["models"]
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for entry in entries:
            if args.only and not any(name in entry["name"] for name in args.only):
                continue
            print(f"auditing {entry['name']} ...", file=sys.stderr, flush=True)
            rows.append(check(entry, Path(tmp)))
    print(table(rows))
    print(f"\nload average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} CPUs")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
