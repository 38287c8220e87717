"""The typed attribute readers of graph/onnx_utils: defaults, the required form, types and lengths."""

from __future__ import annotations

import pytest
from onnx import helper

from fimaudit.errors import ModelError
from fimaudit.graph.onnx_utils import REQUIRED, float_attribute, int_attribute, ints_attribute, str_attribute

NODE = helper.make_node(
    "Conv", ["x", "w"], ["y"], name="conv0", group=2, strides=[2, 2], auto_pad="SAME_UPPER", alpha=0.5
)


def test_present_attributes_are_read_typed() -> None:
    assert int_attribute(NODE, "group", 1) == 2
    assert float_attribute(NODE, "alpha", 1.0) == 0.5
    assert ints_attribute(NODE, "strides", [1, 1], length=2) == [2, 2]
    assert str_attribute(NODE, "auto_pad", "NOTSET") == "SAME_UPPER"


def test_absent_attributes_give_the_default_or_none() -> None:
    assert int_attribute(NODE, "axis", 0) == 0
    assert int_attribute(NODE, "axis", None) is None
    assert float_attribute(NODE, "beta") is None
    assert ints_attribute(NODE, "pads") is None
    assert ints_attribute(NODE, "pads", range(2)) == [0, 1]
    assert str_attribute(NODE, "mode") is None


@pytest.mark.parametrize(
    "read",
    [
        lambda: int_attribute(NODE, "axis", REQUIRED),
        lambda: float_attribute(NODE, "beta", REQUIRED),
        lambda: ints_attribute(NODE, "pads", REQUIRED),
        lambda: str_attribute(NODE, "mode", REQUIRED),
    ],
)
def test_a_required_attribute_that_is_absent_is_a_model_error_naming_the_node(read) -> None:
    with pytest.raises(ModelError, match=r"Conv node 'conv0'.*required"):
        read()


@pytest.mark.parametrize(
    "read",
    [
        lambda: int_attribute(NODE, "auto_pad", 0),
        lambda: float_attribute(NODE, "strides", 0.0),
        lambda: ints_attribute(NODE, "group"),
        lambda: str_attribute(NODE, "group", ""),
        lambda: ints_attribute(NODE, "strides", length=3),
    ],
)
def test_a_value_of_the_wrong_type_or_length_is_a_model_error_naming_the_node(read) -> None:
    with pytest.raises(ModelError, match=r"Conv node 'conv0': attribute"):
        read()
