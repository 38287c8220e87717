"""Float64 reference Jacobians of the corpus models by PyTorch autograd.

Why: when fimaudit's graph Jacobian and its float32 finite differences disagree by 1e-2 on a
real model, only a third, more accurate answer says which one is wrong. The torch models are
rebuilt exactly as tools/corpus/export_torchvision.py built them (same seeds), cast to float64,
and differentiated with one backward pass per class.

    /work/venvs/torch/bin/python tools/corpus/torch_reference.py [--corpus /work/corpus]

Writes ``reference_<arch>.npz`` (``jacobians`` [N, K, d] and ``logits`` [N, K], float64) for the
inputs in ``inputs_3x32x32.npy``; benchmarks/corpus_agreement.py compares against them.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from export_torchvision import ARCHITECTURES, INPUTS_FILE, NUM_CLASSES, build_model  # noqa: E402

LOG = logging.getLogger("torch_reference")


def reference(model: torch.nn.Module, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Jacobians [N, K, d] and logits [N, K] in float64, one backward pass per class."""
    model = model.double()
    jacobians, logits = [], []
    for sample in inputs:
        x = torch.from_numpy(sample[None].astype(np.float64)).requires_grad_(True)
        z = model(x)[0]
        rows = [torch.autograd.grad(z[k], x, retain_graph=True)[0].reshape(-1) for k in range(z.shape[0])]
        jacobians.append(torch.stack(rows).numpy())
        logits.append(z.detach().numpy())
    return np.stack(jacobians), np.stack(logits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=Path("/work/corpus"))
    parser.add_argument("--only", nargs="*")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(2)
    inputs = np.load(args.corpus / INPUTS_FILE)
    for arch in ARCHITECTURES:
        if args.only and arch.name not in args.only:
            continue
        # Built from the float32 inputs, as the export was (BatchNorm calibration, head scale).
        model = build_model(arch, NUM_CLASSES, inputs)
        jacobians, logits = reference(model, inputs)
        np.savez(args.corpus / f"reference_{arch.name}.npz", jacobians=jacobians, logits=logits)
        LOG.info("%s: reference Jacobians %s", arch.name, jacobians.shape)


if __name__ == "__main__":
    main()
