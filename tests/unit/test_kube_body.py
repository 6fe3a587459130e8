"""Request bodies an apply's YAML decoder reads back exactly (found by the spec property
suite: an env value with DEL was admitted, then every apply refused with 400)."""

from __future__ import annotations

import json

import yaml
from wasmop.kube.client import encode_body

TRICKY = "a\x7fb\x85c\x9fd\u2028e\u2029f\ufffeg\U00010000h é"


def test_a_body_round_trips_through_json_and_yaml_exactly() -> None:
    body = {"spec": {"env": [{"name": "A", "value": TRICKY}]}}
    data = encode_body(body)
    assert json.loads(data) == body
    # The API server decodes an apply as YAML; PyYAML refuses the same raw characters.
    assert yaml.safe_load(data.decode()) == body


def test_only_what_yaml_refuses_is_escaped() -> None:
    text = encode_body({"v": TRICKY}).decode()
    for raw in ("\x7f", "\x85", "\x9f", "\u2028", "\u2029", "\ufffe"):
        assert raw not in text
    assert "\\u007f" in text and "\\u2028" in text
    assert "\U00010000" in text and "é" in text  # UTF-8 as it is, no surrogate pair
