"""``fimaudit inspect``: the model's description and what an audit would differentiate."""

from __future__ import annotations

from typing import Any

from fimaudit.audit import intake
from fimaudit.graph.architecture import architecture_lines, recognise_architecture
from fimaudit.resources import MemoryBudget
from fimaudit.text import visible


def inspect_model(
    model_path: str, input_name: str | None = None, output_name: str | None = None, budget: MemoryBudget | None = None
) -> dict[str, Any]:
    """Description, selection and architecture of a model, JSON-ready."""
    taken = intake(model_path, input_name, output_name, budget=budget)
    selection = taken.selection
    return {
        "model": taken.description.to_dict(),
        "selection": {
            "input": {"name": selection.input_name, "shape": selection.input_shape, "dtype": selection.input_dtype},
            "output": {"name": selection.output_name, "kind": selection.output_kind, "logits": selection.logits_transform},
            "fixed_batch": selection.fixed_batch,
            "extra_inputs": selection.extra_inputs,
        },
        "architecture": recognise_architecture(taken.loaded.proto, selection.input_name).to_dict(),
    }


def _shape(shape: Any) -> str:
    if shape is None:
        return "[?]"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def inspection_text(document: dict[str, Any]) -> str:
    """The human-readable form printed by ``fimaudit inspect``.

    Names, producer and paths come from the model: every line is made ``visible`` (escape
    sequences and bidi overrides shown as ``\\x1b`` / ``\\u202e``, never sent to the terminal).
    """
    model = document["model"]
    selection = document["selection"]
    lines = [
        f"model:       {model['path']}",
        f"sha256:      {model['sha256']}",
        *([f"combined:    {model['combined_sha256']} (model and external data)"] if model.get("external_data") else []),
        f"producer:    {model['producer']} {model['producer_version']}".rstrip(),
        f"ir_version:  {model['ir_version']}",
        "opsets:      " + ", ".join(f"{domain} {version}" for domain, version in model["opsets"].items()),
        f"parameters:  {model['parameter_count']:,}",
        f"nodes:       {model['node_count']}",
    ]
    for entry in model.get("external_data", []):
        lines.append(f"external:    {entry['location']} ({entry['size']:,} bytes, sha256 {entry['sha256']})")
    lines.append("inputs:")
    lines += [f"  {t['name']}: {t['dtype']} {_shape(t['shape'])}" for t in model["inputs"]]
    lines.append("outputs:")
    lines += [f"  {t['name']}: {t['dtype']} {_shape(t['shape'])}" for t in model["outputs"]]
    lines.append("ops:         " + ", ".join(f"{op} {count}" for op, count in model["op_histogram"].items()))
    chosen_in = selection["input"]
    chosen_out = selection["output"]
    lines.append(f"audit input:  {chosen_in['name']} {chosen_in['dtype']} {_shape(chosen_in['shape'])}"
                 + (f" (fixed batch {selection['fixed_batch']})" if selection["fixed_batch"] else ""))
    lines.append(f"audit output: {chosen_out['name']} ({chosen_out['kind']}; logits: {chosen_out['logits']})")
    if selection["extra_inputs"]:
        lines.append("other inputs: " + ", ".join(selection["extra_inputs"]))
    if "architecture" in document:
        lines += architecture_lines(document["architecture"])
    return "\n".join(visible(line) for line in lines)
