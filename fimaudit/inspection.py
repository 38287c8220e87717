"""``fimaudit inspect``: the model's description and what an audit would differentiate.

Every model the loader can parse is described, refused or not: when no input or output can be
chosen (no float input, a single score of unknown kind, ...), the document carries ``refusal``
(the reason an audit would stop with) instead of ``selection``; ``fimaudit inspect`` prints the
description and exits 2 with that reason, as it did before without the description.
"""

from __future__ import annotations

from typing import Any

from fimaudit.errors import FimauditError
from fimaudit.graph.architecture import architecture_lines, recognise_architecture
from fimaudit.graph.describe import describe_model
from fimaudit.graph.loader import load_model
from fimaudit.graph.ml_outputs import piecewise_constant_note
from fimaudit.graph.selection import select_input_output
from fimaudit.resources import MemoryBudget
from fimaudit.text import visible


def inspect_model(
    model_path: str, input_name: str | None = None, output_name: str | None = None, budget: MemoryBudget | None = None,
    output_kind: str | None = None, wrt: str = "input",
) -> dict[str, Any]:
    """Description, selection and architecture of a model, JSON-ready.

    A model that cannot be parsed raises; one whose input or output cannot be chosen is described
    with ``refusal`` = {"reason", "error"} in place of ``selection`` and ``architecture``.
    ``wrt="embeddings"`` shows what ``audit --wrt embeddings`` would differentiate (token-id models).
    """
    loaded = load_model(model_path, budget=budget)
    description = describe_model(loaded)
    try:
        if wrt == "embeddings":
            from fimaudit.tokens import at_embeddings

            loaded, selection, _site = at_embeddings(loaded, output_name)
        else:
            selection = select_input_output(loaded, input_name, output_name, output_kind)
    except FimauditError as exc:
        return {"model": description.to_dict(), "refusal": {"reason": str(exc), "error": type(exc).__name__}}
    flat = piecewise_constant_note(loaded.proto, selection.input_name, selection.logits_source)
    return {
        "model": description.to_dict(),
        **({"notes": [flat]} if flat else {}),
        "selection": {
            "input": {"name": selection.input_name, "shape": selection.input_shape, "dtype": selection.input_dtype},
            "output": {
                "name": selection.output_name,
                "kind": selection.output_kind,
                "logits": selection.logits_transform,
            },
            "fixed_batch": selection.fixed_batch,
            "extra_inputs": selection.extra_inputs,
        },
        "architecture": recognise_architecture(loaded.proto, selection.input_name).to_dict(),
    }


def refusal_error(document: dict[str, Any]) -> FimauditError | None:
    """The error an audit of the inspected model would stop with (None when it would not)."""
    refusal = document.get("refusal")
    return None if refusal is None else FimauditError(refusal["reason"])


def _shape(shape: Any) -> str:
    if shape is None:
        return "[?]"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def inspection_text(document: dict[str, Any]) -> str:
    r"""The human-readable form printed by ``fimaudit inspect``.

    Names, producer and paths come from the model: every line is made ``visible`` (escape
    sequences and bidi overrides shown as ``\x1b`` / ``\u202e``, never sent to the terminal).
    """
    model = document["model"]
    selection = document.get("selection", {})
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
    if "refusal" in document:
        lines.append(f"refused:     {document['refusal']['reason']}")
        return "\n".join(visible(line) for line in lines)
    chosen_in = selection["input"]
    chosen_out = selection["output"]
    lines.append(f"audit input:  {chosen_in['name']} {chosen_in['dtype']} {_shape(chosen_in['shape'])}"
                 + (f" (fixed batch {selection['fixed_batch']})" if selection["fixed_batch"] else ""))
    lines.append(f"audit output: {chosen_out['name']} ({chosen_out['kind']}; logits: {chosen_out['logits']})")
    if selection["extra_inputs"]:
        lines.append("other inputs: " + ", ".join(selection["extra_inputs"]))
    lines += [f"note:         {note}" for note in document.get("notes", [])]
    if "architecture" in document:
        lines += architecture_lines(document["architecture"])
    return "\n".join(visible(line) for line in lines)
