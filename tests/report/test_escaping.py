"""Everything taken from a model is untrusted: a model whose names and metadata hold markup gets
it rendered as text in the HTML report and as inert code spans in the Markdown summary."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from fimaudit.cli import main

SCRIPT = "<script>alert('x')</script>"
INPUT = 'pixels"><script>alert(1)</script>'
OUTPUT = "scores<img src=x onerror=alert(2)>"


def hostile_model():
    """A linear classifier whose every free-text field carries markup."""
    weight = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", [INPUT, "W"], [OUTPUT], transB=1, name="<b>gemm</b>")],
        "graph<script>",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(weight, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name=f"evil{SCRIPT}", producer_version="<i>1</i>", doc_string=f"doc {SCRIPT} `md` **bold**")
    model.ir_version = 8
    helper.set_model_props(model, {"<script>key</script>": SCRIPT, "normalization": "mean=<b>0</b>"})
    return model


@pytest.fixture
def outputs(save_model, tmp_path):
    path = save_model(hostile_model(), "evil`name<script>.onnx")
    data = tmp_path / "data.npy"
    np.save(data, np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32))
    files = {name: tmp_path / name for name in ("r.html", "r.json", "r.md")}
    result = CliRunner().invoke(main, ["audit", str(path), "--data", str(data), "--gradients", "fd",
                                       "--report", str(files["r.html"]), "--json", str(files["r.json"]), "--summary", str(files["r.md"])])
    assert result.exit_code == 0, result.output
    return {name: file.read_text() for name, file in files.items()}


def test_markup_from_the_model_is_text_in_the_html(outputs) -> None:
    html = outputs["r.html"]
    assert "<script" not in html.lower()
    assert "<img src=x" not in html and "<b>" not in html and "<i>" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html  # the metadata value, shown as text
    assert "evil&lt;script&gt;" in html  # producer
    assert "pixels&#34;&gt;&lt;script&gt;" in html  # input name
    assert "scores&lt;img src=x onerror=alert(2)&gt;" in html  # output name
    assert "mean=&lt;b&gt;0&lt;/b&gt;" in html  # a preprocessing hint from the metadata
    assert "doc &lt;script&gt;" in html  # doc string


def test_the_json_keeps_the_strings_verbatim(outputs) -> None:
    document = json.loads(outputs["r.json"])
    assert document["model"]["metadata"]["<script>key</script>"] == SCRIPT
    assert document["model"]["input"]["name"] == INPUT
    assert SCRIPT in document["model"]["doc_string"]


def test_the_markdown_summary_puts_model_text_in_code_spans(outputs) -> None:
    summary = outputs["r.md"]
    assert summary.count("\n") == 1 and summary.endswith("\n")
    assert "`evil'name<script>.onnx`" in summary
    spans = summary.split("`")
    assert len(spans) % 2 == 1, "backticks are balanced"
    outside = "".join(spans[0::2])
    assert "<" not in outside
