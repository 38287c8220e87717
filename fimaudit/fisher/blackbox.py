"""The ``blackbox`` method: lambda_max(F) from forward passes only, with an exact 95% interval.

Only ``problem.jacobian.logits`` is called (model evaluations; no jvp/vjp of any gradient source),
so the estimate is what a user with nothing but an inference endpoint can compute.

The sketch. Draw m Gaussian directions g_i ~ N(0, I_d) and take central differences of the
logits along each (two evaluations): J g_i. With A = C^{1/2} J (K x d), the columns
y_i = C^{1/2} J g_i are i.i.d. N(0, Sigma), Sigma = A A^T, and lambda_max(F) = lambda_max(Sigma).
Because the directions are Gaussian by construction, the y_i are *exactly* Gaussian whatever the
model (up to finite-difference error), and that is what the interval below rests on.

The point estimate. lambda_max of the sample matrix G = (1/m) sum y_i y_i^T is biased upward, badly
so when the top eigenvalues of Sigma are close (with 99 equal eigenvalues and m = 200 it is ~2.8x
too large). Instead the directions are split into two halves; each half's top eigenvector u is
scored on the other half, u^T G_other u, and the two scores are averaged. Each score is, given u,
an unbiased estimate of u^T Sigma u <= lambda_max: the estimate never errs upward in expectation,
and on the sample models (well separated spectra) it is as accurate as lambda_max(G)
(median relative error ~6-7% at m = 200).

The interval (``confidence`` 0.95), valid for any spectrum, by two one-sided bounds at 2.5% each:
- upper: for the true top eigenvector u1, u1^T G u1 = lambda_max chi2_m / m exactly, and
  lambda_max(G) >= u1^T G u1, so lambda_max <= lambda_max(G) m / q_{0.025}(chi2_m) with
  probability >= 97.5%;
- lower: a top eigenvector u_A from the first quarter of the directions, scored on the other
  three quarters (independent of u_A): u_A^T G_B u_A = (u_A^T Sigma u_A) chi2_{m_B} / m_B, so
  lambda_max >= u_A^T Sigma u_A >= u_A^T G_B u_A m_B / q_{0.975}(chi2_{m_B}) w.p. >= 97.5%.
At m = 200 the interval is about [0.8, 1.23] x lambda_max when the top eigenvalue is separated.

Budget: model evaluations per sample (default 400): m = budget // 2 directions; the logits at x
are the audit's own (already paid for).

Finite-difference error (issue 16 item 5). The y_i are Gaussian only up to the differencing
error e_i of each column, and on flat or badly scaled models that error is the whole signal (a
model whose Fisher matrix is exactly zero gave lambda_max up to 355 with intervals excluding 0).
Each column therefore carries a bound on ||A e_i||, from what its own evaluations show:
- curvature and kinks: the one-sided differences at the two steps +h and -h (no extra
  evaluation: f(x) is the audit's own) differ by S = f(x + h g) + f(x - h g) - 2 f(x). |S| / 2h is
  exactly the central difference's error when one ReLU kink lies within the step, and about
  h |f''| / 2 (more than the h^2 |f'''| / 6 truncation) on smooth models. It also holds the random
  part of the accumulated rounding of the three outputs (about 1.7x its share in the difference);
- output rounding: each output is rounded to the model's float type, at most half its spacing
  there (about u |f|, u the unit roundoff) per evaluation, over 2h in the difference: the floor
  that S misses when the outputs round to the same value (a change below one ulp reads as 0).
  The per-class error takes the larger of this floor and |S| / 2h (each covers its own regime);
- input rounding: x +- h g are rounded to the input's type, so the represented displacement
  differs from 2 h g by a known delta; its relative size ||delta|| / ||2 h g|| scales the column
  (the J delta it causes is modelled as J g scaled, not bounded).
Per class that makes eps_ik, and ||A e_i||^2 = e^T C e <= sum_k p_k eps_ik^2 (a variance
is at most the second moment). The interval is widened by these (triangle inequality in l2 over
the columns, see ``sketch_lambda_max``). When the sketch's whole signal lies within its error floor
(mean ||y_i||^2 <= mean ||A e_i||^2) the model is flat at this step: the result is kind
``upper_bound`` (0 <= lambda_max <= the widened upper end), never an estimate that excludes 0.

Memory: the m x K derivatives (and the K x m sketch) are what grows with the budget; the audit's
plan (resources.estimator_needs) counts them and refuses a budget that cannot fit. The rest is
bounded: perturbed rows are built in chunks of the plan's batch (the gradient source's
``chunk_rows``), C enters through its factor A (no K x K root), and each eigenproblem is solved
on the smaller side of its columns (m x m or K x K).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fimaudit.errors import ModelError
from fimaudit.fisher.covariance import SoftmaxCovariance
from fimaudit.fisher.operator import CostMeter, resolve_budget
from fimaudit.fisher.problem import SampleProblem
from fimaudit.fisher.registry import estimator
from fimaudit.fisher.result import SpectralResult
from fimaudit.gradients.finite_differences import default_step

DEFAULT_EVALUATIONS = 400
MINIMUM_EVALUATIONS = 20
CONFIDENCE = 0.95
#: Share of directions that estimate the eigenvector for the lower bound (the rest score it).
LOWER_BOUND_SPLIT = 0.25
#: Rounding of one output to the model's float type, in half-spacings there (its final rounding;
#: accumulated rounding shows in the curvature term S, which is random across directions).
ROUNDING_FACTOR = 1.0
# Perturbed rows built at once: bounds memory for large inputs (d up to 10^6 floats per row).
_MAX_CHUNK_ELEMENTS = 1 << 24


@dataclass
class SketchEstimate:
    """What the Gaussian sketch says about lambda_max(Sigma), from the columns Y = [y_1 .. y_m]."""

    value: float
    interval: tuple[float, float]
    sample_top: float  # lambda_max(G): upward biased, kept for the record
    directions: int
    #: RMS over the columns of the bound on ||A e_i|| (finite-difference error), 0 when none given.
    error_rms: float = 0.0
    #: RMS of the columns themselves, sqrt(mean ||y_i||^2).
    signal_rms: float = 0.0
    #: The signal lies within its error floor: only the upper end says anything.
    flat: bool = False


def gaussian_directions(rng: np.random.Generator, count: int, size: int) -> np.ndarray:
    """[count, size] standard normal directions (E[g g^T] = I; exact Gaussianity matters here)."""
    return rng.standard_normal((count, size))


def directional_derivatives(
    problem: SampleProblem, directions: np.ndarray, relative_step: float | None = None
) -> np.ndarray:
    """J g for each row g of ``directions`` [m, d] -> [m, K], by central differences of the logits.

    See :func:`directional_differences`, which also returns each value's error bound.
    """
    return directional_differences(problem, directions, relative_step)[0]


def directional_differences(
    problem: SampleProblem, directions: np.ndarray, relative_step: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(J g, error bound) for each row g of ``directions`` [m, d]: two [m, K] arrays.

    Forward evaluations only (``problem.jacobian.logits``). Step along g: h = s / ||g||_2 with
    s = relative_step * max(1, max|x|) (relative_step defaults to the finite-difference source's
    own, eps^(1/3) / 5 for float32): each evaluation moves x by s in l2, as far as one coordinate
    step of the finite-difference Jacobian does. Normalising by max|g| instead would move it
    ~sqrt(d)/4 times farther (15x at d = 3072) and cross far more ReLU kinks: on a random-weight
    DenseNet-121 (3x32x32) that made J g 17% wrong against gradient graphs, against 3-5% now;
    smaller steps lose to float32 rounding (measured on the sample models and the corpus).

    The error bound per class is the module doc's: |S| / 2h + output rounding + input rounding,
    with S = f(x + h g) + f(x - h g) - 2 f(x) and f(x) = ``problem.logits``.
    """
    sample = np.asarray(problem.sample)
    dtype = sample.dtype if np.issubdtype(sample.dtype, np.floating) else np.dtype(np.float32)
    roundoff = unit_roundoff(problem, dtype)
    flat = sample.reshape(-1).astype(np.float64)
    centre = np.asarray(problem.logits, dtype=np.float64).reshape(-1)
    step = (relative_step or default_step(dtype)) * max(1.0, float(np.abs(flat).max(initial=0.0)))
    count = directions.shape[0]
    results = np.empty((count, problem.num_classes), dtype=np.float64)
    errors = np.empty_like(results)
    per_chunk = _directions_per_chunk(problem)
    for start in range(0, count, per_chunk):
        chunk = np.asarray(directions[start : start + per_chunk], dtype=np.float64)
        scale = np.linalg.norm(chunk, axis=1, keepdims=True)
        scale[scale == 0] = 1.0
        h = step / scale
        plus = (flat[None] + h * chunk).astype(dtype)
        minus = (flat[None] - h * chunk).astype(dtype)
        rows = np.concatenate([plus, minus]).reshape((-1, *sample.shape))
        logits = np.asarray(problem.jacobian.logits(rows), dtype=np.float64).reshape(rows.shape[0], -1)
        size = chunk.shape[0]
        f_plus, f_minus = logits[:size], logits[size:]
        derivatives = (f_plus - f_minus) / (2.0 * h)
        curvature = np.abs(f_plus + f_minus - 2.0 * centre) / (2.0 * h)
        rounding = ROUNDING_FACTOR * (_half_ulp(f_plus, roundoff) + _half_ulp(f_minus, roundoff)) / (2.0 * h)
        represented = plus.astype(np.float64) - minus.astype(np.float64)
        slip = np.linalg.norm(represented - 2.0 * h * chunk, axis=1, keepdims=True) / (2.0 * h * scale)
        spread = np.sqrt(np.mean(derivatives**2, axis=1, keepdims=True))
        results[start : start + size] = derivatives
        errors[start : start + size] = np.maximum(curvature, rounding) + slip * (np.abs(derivatives) + spread)
    if not (np.isfinite(results).all() and np.isfinite(errors).all()):
        raise ModelError(
            "finite differences of the model's scores are NaN or Inf next to this sample (its scores "
            "overflow there); its Fisher information cannot be estimated from forward passes"
        )
    return results, errors


def _half_ulp(values: np.ndarray, roundoff: float) -> np.ndarray:
    """Half the spacing of the model's float type at |values|: the most its final rounding moved them.

    That is u |v| rounded up to the binade, 2^floor(log2 |v|) * 2u; 0 stays 0.
    """
    magnitude = np.abs(values)
    binade = np.exp2(np.floor(np.log2(np.where(magnitude > 0, magnitude, 1.0))))
    return np.where(magnitude > 0, binade * roundoff, 0.0)


def unit_roundoff(problem: SampleProblem, dtype: np.dtype) -> float:
    """U of the type the model computes its scores in.

    That is the gradient source's input type when it says (ONNX Runtime's), else the sample's;
    float32 for anything coarser unknown.
    """
    declared = problem.jacobian.dtype
    kind = np.dtype(declared) if declared is not None else np.dtype(dtype)
    if not np.issubdtype(kind, np.floating):
        kind = np.dtype(np.float32)
    return float(np.finfo(kind).eps) / 2.0


def _directions_per_chunk(problem: SampleProblem) -> int:
    """Directions differenced per model call.

    The planned batch (two rows each), and at most _MAX_CHUNK_ELEMENTS perturbed elements.
    """
    rows = problem.jacobian.chunk_rows
    per_chunk = _MAX_CHUNK_ELEMENTS // (2 * max(1, problem.input_size))
    if rows:
        per_chunk = min(per_chunk, int(rows) // 2)
    return max(1, per_chunk)


def gaussian_directional_derivatives(
    problem: SampleProblem, count: int, rng: np.random.Generator, relative_step: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(J g, error bound) for ``count`` fresh Gaussian directions g, drawn chunk by chunk ([count, K] each).

    The directions are never all held at once: 200 directions of a 224 x 224 x 3 input would
    take 240 MB.
    """
    per_chunk = _directions_per_chunk(problem)
    values, errors = [], []
    for start in range(0, count, per_chunk):
        directions = gaussian_directions(rng, min(per_chunk, count - start), problem.input_size)
        found, error = directional_differences(problem, directions, relative_step)
        values.append(found)
        errors.append(error)
    if not values:
        empty = np.empty((0, problem.num_classes))
        return empty, empty.copy()
    return np.concatenate(values), np.concatenate(errors)


def _top_vector(columns: np.ndarray) -> np.ndarray:
    """The top left singular vector of ``columns`` [K, m], from the smaller Gram matrix."""
    if columns.shape[0] <= columns.shape[1]:
        _, vectors = np.linalg.eigh(columns @ columns.T)
        return vectors[:, -1]
    _, vectors = np.linalg.eigh(columns.T @ columns)
    lifted = columns @ vectors[:, -1]
    norm = float(np.linalg.norm(lifted))
    return lifted / norm if norm > 0 else lifted


def _top_eigenvalue(columns: np.ndarray) -> float:
    """lambda_max(Y Y^T) from the smaller of Y Y^T and Y^T Y (same non-zero spectrum)."""
    gram = columns @ columns.T if columns.shape[0] <= columns.shape[1] else columns.T @ columns
    return float(np.linalg.eigvalsh(gram)[-1])


def _score(vector: np.ndarray, columns: np.ndarray) -> float:
    """u^T G u for the sample matrix G of ``columns``: mean of (u . y_i)^2."""
    return float(np.mean((vector @ columns) ** 2))


def sketch_lambda_max(
    columns: np.ndarray, confidence: float = CONFIDENCE, errors: np.ndarray | None = None
) -> SketchEstimate:
    """Cross-fitted estimate and interval for lambda_max(Sigma) from y_i ~ N(0, Sigma) (module doc).

    ``columns`` is [K, m], m >= 4. ``errors`` [m] bounds ||y_i - y_i^true|| per column (the
    finite-difference error); the interval is then about the true columns:
    - upper: ||Y^true|| <= ||Y|| + ||E||_F, so sqrt(lambda_max(G^true)) <= sqrt(lambda_max(G)) + rms(eps);
    - lower: |u . y_i - u . y_i^true| <= eps_i for a unit u, so the held-out score's root loses at
      most rms(eps over the held-out columns) (Minkowski), clipped at 0.
    """
    from scipy import stats  # lazily: scipy.stats costs ~1.2 s at every CLI start
    y = np.asarray(columns, dtype=np.float64)
    count = y.shape[1]
    eps = np.zeros(count) if errors is None else np.asarray(errors, dtype=np.float64).reshape(-1)
    alpha = 1.0 - confidence
    sample_top = float(max(_top_eigenvalue(y) / count, 0.0))
    half = count // 2
    first, second = y[:, :half], y[:, half:]
    value = 0.5 * (_score(_top_vector(first), second) + _score(_top_vector(second), first))
    error_rms = float(np.sqrt(np.mean(eps**2)))
    signal_rms = float(np.sqrt(np.mean(np.sum(y**2, axis=0))))
    upper = (np.sqrt(sample_top) + error_rms) ** 2 * count / float(stats.chi2.ppf(alpha / 2.0, count))
    split = min(count - 2, max(1, int(round(LOWER_BOUND_SPLIT * count))))
    held_out = count - split
    score = _score(_top_vector(y[:, :split]), y[:, split:])
    held_error = float(np.sqrt(np.mean(eps[split:] ** 2)))
    score = max(0.0, np.sqrt(score) - held_error) ** 2
    lower = score * held_out / float(stats.chi2.ppf(1.0 - alpha / 2.0, held_out))
    flat = bool(errors is not None and signal_rms <= error_rms)
    if flat:
        lower = 0.0
    # Widening an interval to hold the point estimate keeps its coverage (rarely needed).
    interval = (min(lower, value), max(upper, value))
    return SketchEstimate(
        value=value, interval=interval, sample_top=sample_top, directions=count,
        error_rms=error_rms, signal_rms=signal_rms, flat=flat,
    )


def blackbox_lambda_max(
    problem: SampleProblem,
    num_evaluations: int | None,
    rng: np.random.Generator,
    relative_step: float | None = None,
) -> SpectralResult:
    """lambda_max(F) from ``num_evaluations`` forward evaluations (None: 400), with a 95% interval."""
    evaluations = resolve_budget(
        "blackbox", num_evaluations, DEFAULT_EVALUATIONS, MINIMUM_EVALUATIONS, "model evaluations"
    )
    meter = CostMeter(problem)
    count = evaluations // 2
    derivatives, errors = gaussian_directional_derivatives(problem, count, rng, relative_step)  # [m, K] each
    # y_i = A J g_i with A^T A = C: N(0, A J J^T A^T), whose top eigenvalue is lambda_max(F).
    covariance = SoftmaxCovariance(problem.logits)
    # ||A e_i||^2 = e_i^T C e_i <= sum_k p_k eps_ik^2 for |e_ik| <= eps_ik (module doc).
    column_errors = np.sqrt(errors**2 @ covariance.probabilities)
    sketch = sketch_lambda_max(covariance.factor(derivatives).T, CONFIDENCE, column_errors)
    diagnostics = {
        "method": "blackbox",
        "directions": sketch.directions,
        "sample_top_eigenvalue": sketch.sample_top,
        "finite_difference_error_rms": sketch.error_rms,
        "signal_rms": sketch.signal_rms,
        "flat": sketch.flat,
        "interval_basis": (
            "exact for Gaussian directions and any spectrum: chi-square bounds on a held-out "
            "Rayleigh quotient (lower) and on the sketch's top eigenvalue (upper), 2.5% each, "
            "widened by each direction's finite-difference error bound (curvature from the two "
            "one-sided differences, output and input rounding)"
        ),
    }
    if sketch.flat:
        # Every difference is within its error floor: nothing excludes F = 0 (module doc).
        diagnostics["flat_reason"] = (
            f"the differences (rms {sketch.signal_rms:.3g}) are within their finite-difference error "
            f"floor (rms {sketch.error_rms:.3g}): lambda_max is only bounded above"
        )
        return SpectralResult(
            value=sketch.interval[1], kind="upper_bound", interval=None, confidence=1.0 - (1.0 - CONFIDENCE) / 2.0,
            model_evaluations=meter.model_evaluations, seconds=meter.seconds, diagnostics=diagnostics,
        )
    return SpectralResult(
        value=sketch.value,
        kind="estimate",
        interval=sketch.interval,
        confidence=CONFIDENCE,
        model_evaluations=meter.model_evaluations,
        seconds=meter.seconds,
        diagnostics=diagnostics,
    )


@estimator("blackbox")
def blackbox(problem: SampleProblem, budget: int | None, rng: np.random.Generator) -> SpectralResult:
    """Forward passes only; ``budget`` = model evaluations per sample (default 400)."""
    return blackbox_lambda_max(problem, budget, rng)
