"""What an audit does not show, in plain words, chosen for the audit at hand.

Every report carries the general limits of the measure; the others appear when they apply
(synthetic data, finite differences, estimates or one-sided bounds, few samples, saturated
predictions), so a reviewer is not told about caveats that do not concern this audit.
"""

from __future__ import annotations

from typing import Any

from fimaudit.report.formatting import fmt

# With fewer samples than this, p95 is little more than an interpolation towards the maximum.
FEW_SAMPLES = 30
# Top probabilities above this make diag(p) - p p^T tiny, whatever the logits do.
SATURATED = 0.999


def limitations(document: dict[str, Any]) -> list[str]:
    """Plain-language limits of this audit's numbers, most general first."""
    notes = [
        "lambda_max is a local, second-order measure: it says how fast the predicted distribution "
        "changes under very small input perturbations around each audited input. It is not a "
        "certificate against large or adversarially optimised perturbations.",
        "It describes the audited inputs only; inputs unlike them (another distribution, corruptions, "
        "out-of-range values) may be far more sensitive.",
        "Sensitivity is measured with respect to the model's input tensor, exactly as the data was "
        "given. If the model expects normalised inputs x = (u - mean) / std, sensitivity to changes "
        "of the raw input u is F scaled by 1/std on each side (F_u = D F_x D, D = diag(1/std)).",
    ]
    samples = document["samples"]
    data = document["data"]
    method = document["method"]
    if data.get("synthetic"):
        notes.append(
            "The inputs were synthetic N(0, 1) noise (no --data was given): the numbers describe the "
            "model on noise, not on the inputs it will see."
        )
    if method.get("gradients") == "fd":
        step = method.get("gradient_settings", {}).get("fd_relative_step")
        step_text = f" (relative step {fmt(step, 3)})" if step is not None else ""
        notes.append(
            f"Gradients came from central finite differences{step_text}: accurate to about 1e-4 "
            "relative where the model is smooth, less where a step crosses a kink (ReLU, max pooling)."
        )
    kinds = {s["kind"] for s in samples}
    if "lower_bound" in kinds:
        notes.append("Some values are lower bounds: the true lambda_max of those samples may be larger.")
    if "upper_bound" in kinds:
        notes.append("Some values are upper bounds: the true lambda_max of those samples may be smaller.")
    if "estimate" in kinds:
        levels = sorted({s["confidence"] for s in samples if s["kind"] == "estimate" and s.get("confidence")})
        level_text = f" at {', '.join(fmt(level) for level in levels)} confidence" if levels else ""
        notes.append(
            f"Some values are statistical estimates with intervals{level_text}: each interval may miss "
            "the true value with the stated probability."
        )
    if len(samples) < FEW_SAMPLES:
        notes.append(
            f"Only {len(samples)} samples were audited: the quantiles, p95 in particular, are rough."
        )
    saturated = sum(1 for s in samples if s["top_prob"] > SATURATED)
    if saturated:
        notes.append(
            f"{saturated} of {len(samples)} predictions are saturated (top probability above {SATURATED}): "
            "F shrinks with 1 - sum p_i^2, so a small lambda_max there reflects confidence, not "
            "necessarily flat logits."
        )
    attack = document.get("attack_summary")
    if attack is not None and attack["status"] == "run":
        notes.append(
            "The attacks' epsilon_min and robust accuracy are upper bounds: each reported example was "
            "re-run and changes the class, but a stronger attack may find closer ones, and a radius with no "
            "example found is not certified robust. The rank correlation describes these samples only."
        )
    elif attack is not None:
        notes.append(f"Attacks were asked for but did not run: {attack['reason']}.")
    return notes
