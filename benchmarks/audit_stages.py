"""Where an audit's wall time goes: seconds and share of each stage of ``run_audit``, per model.

Why: issue 12's goal 3 (bounds <= 10% of an audit) and the gradient check's cost are questions
about *shares* of one audit's wall time, and on 2 shared cores only numbers taken in one run,
with the load stated, mean anything. Each audit runs in a fresh process (so the cold run really
has no warm ONNX Runtime or import state) through the library call the CLI makes
(``fimaudit.audit.run_audit``, ``--method exact --gradients graph``, or the ``--method`` given:
``auto`` for the 3x224x224 corpus, where exact would mean K = 1000 reverse rows a sample); peak
memory is the child process's maximum resident set. The stages are timed by
wrapping the functions ``run_audit`` calls (nothing in the package is changed):

- ``intake``: load and check the model, describe it, choose input and logits;
- ``prepare``: the logits model and its ONNX Runtime session (one probe run);
- ``source``: the gradient graphs derived and their sessions built (``make_source``);
- ``samples``: every sample's exact lambda_max (``audit_samples``);
- ``grad check``: ``sanity.gradient_check`` (finite differences and the adjoint identity, the
  JVP session's creation included: only the check uses it with ``--method exact``);
- ``bounds``: architecture, global and per-sample certified bounds (``_analytic_bounds``);
- ``other``: the rest of ``run_audit`` (data, planning, logits, the verdict).

Modes: ``cold`` (``--no-cache``: the bounds' layer gains derived) and ``warm`` (a temporary
XDG_CACHE_HOME filled by one unmeasured audit of the same model, then the measured one).

    .venv/bin/python benchmarks/audit_stages.py [--models resnet18_torchscript ...] [--samples 8]
        [--modes cold warm] [--corpus /work/corpus] [--data /work/corpus/inputs_3x32x32.npy]
        [--roots /work/main /tmp/before]   # before/after: a `git worktree add /tmp/before <commit>`
        [--method auto]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("resnet18_torchscript", "vgg11_bn_torchscript", "vit_small_torchscript")
#: (stage, module attribute run_audit calls it through).
STAGES = (
    ("intake", "intake"),
    ("prepare", "prepare_model"),
    ("source", "make_source"),
    ("samples", "audit_samples"),
    ("grad check", "gradient_check"),
    ("bounds", "_analytic_bounds"),
)


def loadavg() -> str:
    """The first three fields of /proc/loadavg (1, 5 and 15 minutes)."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def child(model: str, data: str, samples: int, cache: bool, method: str = "exact") -> dict[str, Any]:
    """One audit in this process, every stage timed (runs in the fresh process ``measure`` starts)."""
    started = time.perf_counter()
    from fimaudit import audit

    imports = time.perf_counter() - started
    try:  # one ONNX Runtime pool for the process, as the fimaudit command has (cli.entry)
        from fimaudit import ort_threads
    except ImportError:  # an A/B root from before ort_threads.py: per-session pools
        pass
    else:
        ort_threads.share_process_pool()
    seconds: dict[str, float] = {}

    def timed(stage: str, function: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            begun = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                seconds[stage] = seconds.get(stage, 0.0) + time.perf_counter() - begun

        return wrapper

    for stage, attribute in STAGES:
        setattr(audit, attribute, timed(stage, getattr(audit, attribute)))
    config = audit.AuditConfig(model_path=model, data_path=data, samples=samples, method=method,
                               gradients="graph", cache=cache)
    begun = time.perf_counter()
    result = audit.run_audit(config)
    total = time.perf_counter() - begun
    check = result.gradient_check
    return {
        "imports": imports,
        "total": total,
        "stages": seconds,
        "check": None if check is None else check.status,
        "bound_seconds": None if result.bound is None else result.bound.details.get("seconds"),
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def measure(
    model: Path, data: str, samples: int, mode: str, root: Path = ROOT, method: str = "exact"
) -> dict[str, Any]:
    """The audit of ``model`` in a fresh process: cold (--no-cache) or warm (cache filled first).

    ``root``: the checkout whose fimaudit runs (another commit's worktree, for before/after).
    """
    command = [sys.executable, __file__, "--child", str(model), "--data", data, "--samples", str(samples),
               "--method", method]
    with tempfile.TemporaryDirectory() as cache_home:
        environment = {**os.environ, "XDG_CACHE_HOME": cache_home, "PYTHONPATH": str(root)}
        if mode == "warm":
            subprocess.run(command, env=environment, check=True, capture_output=True)
        else:
            command.append("--no-cache")
        done = subprocess.run(command, env=environment, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def row(name: str, mode: str, measured: dict[str, Any]) -> str:
    """One table row: seconds and share of each stage."""
    total = measured["total"]
    stages = dict(measured["stages"])
    stages["other"] = total - sum(stages.values())
    cells = [f"{stages.get(stage, 0.0):6.2f} {100 * stages.get(stage, 0.0) / total:3.0f}%"
             for stage in [*(s for s, _ in STAGES), "other"]]
    return (f"{name:24} {mode:5} {total:7.2f} " + " ".join(f"{cell:>12}" for cell in cells)
            + f" {measured['peak_mib']:8.0f}  {measured['check']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--modes", nargs="+", default=["cold", "warm"], choices=["cold", "warm"])
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--method", default="exact", choices=["exact", "auto", "lanczos"])
    parser.add_argument("--corpus", default="/work/corpus")
    parser.add_argument("--data", default="/work/corpus/inputs_3x32x32.npy")
    parser.add_argument("--roots", nargs="+", default=[str(ROOT)],
                        help="checkouts to compare, interleaved per model (e.g. a worktree of the commit before)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--no-cache", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.data, args.samples, not args.no_cache, args.method)))
        return
    print(f"load before: {loadavg()}")
    header = " ".join(f"{stage:>12}" for stage in [*(s for s, _ in STAGES), "other"])
    print(f"{'model':24} {'mode':5} {'total s':>7} {header} {'peak MiB':>8}  check (seconds, share of total)")
    for name in args.models:
        for mode in args.modes:
            for number, root in enumerate(args.roots):
                measured = measure(Path(args.corpus) / f"{name}.onnx", args.data, args.samples, mode, Path(root),
                                   args.method)
                label = name if len(args.roots) == 1 else f"{name[:21]}@{number}"
                print(row(label, mode, measured), flush=True)
    if len(args.roots) > 1:
        print("roots: " + "; ".join(f"@{number} {root}" for number, root in enumerate(args.roots)))
    print(f"load after: {loadavg()}")


if __name__ == "__main__":
    main()
