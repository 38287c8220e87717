"""Fisher problems whose answer is known: fake gradient sources and sample-model problems.

``MatrixJacobian`` is an InputJacobian for the linear model z(x) = W x + b: J = W exactly, jvp and
vjp are matrix products, and ``logits`` really evaluates the model (so the black-box estimator's
central differences see the same J). Every row it evaluates or differentiates is counted like
ONNX Runtime rows, so cost accounting can be checked too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fimaudit.fisher.covariance import softmax_covariance
from fimaudit.fisher.problem import SampleProblem
from fimaudit.runtime import RunAccounting
from tests.conftest import SAMPLES


class MatrixJacobian:
    """Exact gradients of z(x) = W x + b (float64): a fake InputJacobian with known J."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray | None = None, name: str = "matrix") -> None:
        self.weight = np.asarray(weight, dtype=np.float64)
        self.num_classes, self.input_size = self.weight.shape
        self.bias = np.zeros(self.num_classes) if bias is None else np.asarray(bias, dtype=np.float64)
        self.name = name
        self.accounting = RunAccounting()
        self.dtype = np.dtype(np.float64)
        self.chunk_rows: int | None = None

    def forward_mode_unavailable(self) -> str | None:
        return None

    def settings(self) -> dict:
        return {}

    def logits(self, inputs: np.ndarray) -> np.ndarray:
        rows = np.asarray(inputs, dtype=np.float64).reshape(-1, self.input_size)
        self.accounting.add(rows.shape[0])
        return rows @ self.weight.T + self.bias

    def dense(self, inputs: np.ndarray) -> np.ndarray:
        count = np.asarray(inputs).shape[0]
        self.accounting.add(count * self.num_classes)
        return np.repeat(self.weight[None], count, axis=0)

    def jvp(self, sample: np.ndarray, tangents: np.ndarray) -> np.ndarray:
        self.accounting.add(tangents.shape[0])
        return np.asarray(tangents, dtype=np.float64) @ self.weight.T

    def vjp(self, sample: np.ndarray, cotangents: np.ndarray) -> np.ndarray:
        self.accounting.add(cotangents.shape[0])
        return np.asarray(cotangents, dtype=np.float64) @ self.weight


@dataclass
class KnownProblem:
    """A SampleProblem with its dense F and exact spectrum, for checking estimators."""

    problem: SampleProblem
    fisher: np.ndarray  # dense d x d, tests only

    @property
    def eigenvalues(self) -> np.ndarray:
        return np.linalg.eigvalsh(self.fisher)

    @property
    def lambda_max(self) -> float:
        return float(self.eigenvalues[-1])

    @property
    def trace(self) -> float:
        return float(np.trace(self.fisher))


def matrix_problem(weight: np.ndarray, logits: np.ndarray, name: str = "matrix", sample: np.ndarray | None = None) -> KnownProblem:
    """F = W^T C W at logits ``logits``: the linear model's bias is chosen so that z(x) = logits."""
    weight = np.asarray(weight, dtype=np.float64)
    x = np.zeros(weight.shape[1]) if sample is None else np.asarray(sample, dtype=np.float64).reshape(-1)
    bias = np.asarray(logits, dtype=np.float64) - weight @ x
    source = MatrixJacobian(weight, bias, name=name)
    problem = SampleProblem(sample=x, logits=np.asarray(logits, dtype=np.float64), jacobian=source)
    fisher = weight.T @ softmax_covariance(logits) @ weight
    return KnownProblem(problem, fisher)


def random_problem(rng: np.random.Generator, classes: int, size: int, decay: float = 1.0, logit_scale: float = 2.0) -> KnownProblem:
    """A random Fisher problem: W with singular values decay^i (decay 1: a flat spectrum)."""
    rank = min(classes, size)
    left, _ = np.linalg.qr(rng.standard_normal((classes, rank)))
    right, _ = np.linalg.qr(rng.standard_normal((size, rank)))
    singular = decay ** np.arange(rank) * rng.uniform(0.5, 2.0)
    weight = (left * singular) @ right.T
    logits = logit_scale * rng.standard_normal(classes)
    sample = rng.uniform(0.0, 1.0, size)
    return matrix_problem(weight, logits, sample=sample)


def sample_model_problems(model: str, count: int, gradients: str = "fd") -> list[SampleProblem]:
    """SampleProblems for the first ``count`` digits on a sample model, through the audit's own intake."""
    from fimaudit.audit import AuditConfig, intake, prepare_model
    from fimaudit.gradients import make_source
    from fimaudit.data import load_data

    path = str(SAMPLES / f"{model}.onnx")
    data_path = str(SAMPLES / "digits_test.npy")
    config = AuditConfig(model_path=path, data_path=data_path, samples=count, gradients=gradients)
    taken = intake(path)
    data = load_data(data_path, taken.selection, count, 0)
    prepared = prepare_model(taken, config, probe=data.inputs[:1], extra=data.extra_feeds)
    source = make_source(gradients, prepared.runner, prepared.selection.sample_shape, prepared.num_classes).source
    logits = source.logits(data.inputs)
    return [SampleProblem(sample=data.inputs[i], logits=logits[i], jacobian=source) for i in range(data.inputs.shape[0])]


def frozen(problem: SampleProblem) -> KnownProblem:
    """The same sample with its finite-difference Jacobian frozen into an exact linear source.

    Isolates an estimator's accuracy from the gradient source's: finite-difference jvp along a
    dense direction and the coordinate-wise dense Jacobian differ by up to ~1e-2 on ReLU models.
    """
    weight = problem.jacobian.dense(problem.sample[None])[0]
    return matrix_problem(weight, problem.logits, name="frozen", sample=problem.sample)


class NoisyJacobian(MatrixJacobian):
    """Like MatrixJacobian, but jvp carries a deterministic relative error (as finite differences do).

    The error depends on the tangent's bytes, so the operator is not linear: Krylov methods can
    believe they converged while the true residual stays at the noise level.
    """

    def __init__(self, weight: np.ndarray, bias: np.ndarray | None = None, noise: float = 1e-3) -> None:
        super().__init__(weight, bias, name="noisy")
        self.noise = noise

    def jvp(self, sample: np.ndarray, tangents: np.ndarray) -> np.ndarray:
        exact = super().jvp(sample, tangents)
        out = np.empty_like(exact)
        for row, (tangent, image) in enumerate(zip(np.asarray(tangents), exact)):
            seed = int.from_bytes(np.asarray(tangent, dtype=np.float64).tobytes()[:8] or b"\0", "little")
            jitter = np.random.default_rng(seed).standard_normal(image.shape)
            out[row] = image + self.noise * np.linalg.norm(image) * jitter / np.sqrt(image.size)
        return out
