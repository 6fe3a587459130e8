"""Static checks of the CRDs, the default runtime and the samples.

The API server is the real judge (integration tests install these files); here we check
what it would reject or silently get wrong without one: structural schemas, a description on
every field for `kubectl explain`, defaults and samples that satisfy the schema, printer
columns and scale paths that point at real fields, and schema defaults that agree with the
fallbacks in wasmop.operator.spec.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from wasmop.operator.spec import FunctionSpec, RuntimeSpec, WasmFunction, WasmRuntime
from wasmop.wellknown import (
    API_VERSION,
    FUNCTION_KIND,
    FUNCTION_PLURAL,
    GROUP,
    RUNTIME_KIND,
    RUNTIME_PLURAL,
    VERSION,
)

CONFIG = Path(__file__).resolve().parents[2] / "operator" / "config"
CRDS = CONFIG / "crds"
SAMPLES = CONFIG / "samples"
FUNCTIONS = Path(__file__).resolve().parents[2] / "functions"

Schema = dict[str, Any]


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((CRDS / name).read_text())


def schema_of(crd: dict[str, Any]) -> Schema:
    [version] = crd["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]


FUNCTION_CRD = load(f"{FUNCTION_PLURAL}.yaml")
RUNTIME_CRD = load(f"{RUNTIME_PLURAL}.yaml")
FUNCTION_SCHEMA = schema_of(FUNCTION_CRD)
RUNTIME_SCHEMA = schema_of(RUNTIME_CRD)


def walk(schema: Schema, path: str = "") -> Iterator[tuple[str, Schema]]:
    """Every schema node below ``schema`` with its JSON path."""
    yield path, schema
    for name, sub in (schema.get("properties") or {}).items():
        yield from walk(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}{{}}")


# --------------------------------------------------------------------------- a tiny validator


def validate(value: Any, schema: Schema, path: str = "") -> list[str]:
    """The OpenAPI checks the API server applies before CEL (no CEL here)."""
    errors: list[str] = []
    if schema.get("x-kubernetes-int-or-string"):
        if isinstance(value, bool) or not isinstance(value, int | str):
            return [f"{path}: {value!r} is neither an integer nor a string"]
        if isinstance(value, str):
            errors += _string_checks(value, schema, path)
        return errors
    kind = schema.get("type")
    if kind == "object":
        if not isinstance(value, dict):
            return [f"{path}: expected an object"]
        for name in schema.get("required", []):
            if name not in value:
                errors.append(f"{path}.{name}: required")
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            if key in props:
                errors += validate(item, props[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                errors += validate(item, extra, f"{path}.{key}")
            elif not schema.get("x-kubernetes-preserve-unknown-fields") and path != ".metadata":
                errors.append(f"{path}.{key}: unknown field")
        if len(value) < schema.get("minProperties", 0):
            errors.append(f"{path}: fewer than {schema['minProperties']} properties")
        if len(value) > schema.get("maxProperties", 10**9):
            errors.append(f"{path}: more than {schema['maxProperties']} properties")
    elif kind == "array":
        if not isinstance(value, list):
            return [f"{path}: expected a list"]
        if not schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", 10**9):
            errors.append(f"{path}: {len(value)} items out of bounds")
        for i, item in enumerate(value):
            errors += validate(item, schema["items"], f"{path}[{i}]")
    elif kind == "string":
        if not isinstance(value, str):
            return [f"{path}: expected a string, got {value!r}"]
        errors += _string_checks(value, schema, path)
    elif kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            return [f"{path}: expected an integer, got {value!r}"]
        if value < schema.get("minimum", -(2**63)) or value > schema.get("maximum", 2**63):
            errors.append(f"{path}: {value} out of bounds")
    elif kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return [f"{path}: expected a number"]
    elif kind == "boolean" and not isinstance(value, bool):
        return [f"{path}: expected true or false, got {value!r}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} not in {schema['enum']}")
    return errors


def _string_checks(value: str, schema: Schema, path: str) -> list[str]:
    errors = []
    if "pattern" in schema and not re.search(schema["pattern"], value):
        errors.append(f"{path}: {value!r} does not match {schema['pattern']}")
    if not schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", 10**9):
        errors.append(f"{path}: length {len(value)} out of bounds")
    return errors


def apply_defaults(value: Any, schema: Schema) -> Any:
    """Structural defaulting as the API server does it: parents first, then their children."""
    if isinstance(value, dict) and schema.get("type") == "object":
        for name, sub in (schema.get("properties") or {}).items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                apply_defaults(value[name], sub)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            apply_defaults(item, schema["items"])
    return value


# --------------------------------------------------------------------------- the CRDs


def test_function_crd_identity() -> None:
    spec = FUNCTION_CRD["spec"]
    assert FUNCTION_CRD["apiVersion"] == "apiextensions.k8s.io/v1"
    assert FUNCTION_CRD["metadata"]["name"] == f"{FUNCTION_PLURAL}.{GROUP}"
    assert spec["group"] == GROUP
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == FUNCTION_KIND
    assert spec["names"]["plural"] == FUNCTION_PLURAL
    assert set(spec["names"]["shortNames"]) == {"wf", "wasmfn"}
    assert spec["names"]["categories"] == ["wasm"]
    [version] = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == (VERSION, True, True)
    assert version["subresources"] == {
        "status": {},
        "scale": {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        },
    }
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert list(columns) == [
        "Phase", "Ready", "Reason", "Version", "Revision", "Age", "Runtime", "URL"
    ]  # fmt: skip
    assert columns["URL"]["priority"] == 1
    assert columns["Ready"]["jsonPath"] == ".status.readyText"


def test_runtime_crd_identity() -> None:
    spec = RUNTIME_CRD["spec"]
    assert RUNTIME_CRD["metadata"]["name"] == f"{RUNTIME_PLURAL}.{GROUP}"
    assert spec["group"] == GROUP
    assert spec["scope"] == "Cluster"
    assert spec["names"]["kind"] == RUNTIME_KIND
    assert spec["names"]["plural"] == RUNTIME_PLURAL
    assert spec["names"]["shortNames"] == ["wrt"]
    assert spec["names"]["categories"] == ["wasm"]
    [version] = spec["versions"]
    assert version["name"] == VERSION
    assert version["subresources"] == {"status": {}}


CRD_SCHEMAS = pytest.mark.parametrize(
    "schema", [FUNCTION_SCHEMA, RUNTIME_SCHEMA], ids=["WasmFunction", "WasmRuntime"]
)


@CRD_SCHEMAS
def test_schema_is_structural(schema: Schema) -> None:
    problems = []
    for path, node in walk(schema):
        if node.get("x-kubernetes-int-or-string"):
            if node.get("anyOf") != [{"type": "integer"}, {"type": "string"}]:
                problems.append(f"{path}: int-or-string needs anyOf integer/string")
            if "type" in node:
                problems.append(f"{path}: int-or-string must not set type")
            continue
        if "type" not in node:
            problems.append(f"{path}: no type")
        if "anyOf" in node or "oneOf" in node or "allOf" in node:
            problems.append(f"{path}: logical junctors are not structural here")
        if node.get("type") == "array" and "items" not in node:
            problems.append(f"{path}: array without items")
        bare = not node.get("properties") and not node.get("additionalProperties")
        if node.get("type") == "object" and path != ".metadata" and bare:
            problems.append(f"{path}: object without properties")
        if "properties" in node and "additionalProperties" in node:
            problems.append(f"{path}: properties and additionalProperties together")
        if node.get("x-kubernetes-list-type") == "map":
            required = set(node["items"].get("required", []))
            for key in node["x-kubernetes-list-map-keys"]:
                if key not in required and "default" not in node["items"]["properties"][key]:
                    problems.append(f"{path}: list-map key {key} must be required")
    assert problems == []


@CRD_SCHEMAS
def test_every_field_is_described(schema: Schema) -> None:
    # The API server forbids anything but type on the root metadata, so it is exempt.
    missing = [
        path or "<root>"
        for path, node in walk(schema)
        if path != ".metadata" and not str(node.get("description", "")).strip()
    ]
    assert missing == []


@CRD_SCHEMAS
def test_defaults_satisfy_the_schema(schema: Schema) -> None:
    errors = []
    for path, node in walk(schema):
        if "default" in node:
            default = apply_defaults(copy.deepcopy(node["default"]), node)
            errors += validate(default, node, f"{path}(default)")
    assert errors == []


@CRD_SCHEMAS
def test_cel_rules_have_messages(schema: Schema) -> None:
    rules = [
        (path, rule)
        for path, node in walk(schema)
        for rule in node.get("x-kubernetes-validations", [])
    ]
    assert rules
    for path, rule in rules:
        assert rule.get("message") or rule.get("messageExpression"), f"{path}: {rule['rule']}"
        assert rule["rule"].count("(") == rule["rule"].count(")"), f"{path}: {rule['rule']}"


def resolve_path(schema: Schema, json_path: str) -> Schema | None:
    """The schema a JSONPath points at; ``name[?(filter)]`` steps into an array's items."""
    node: Schema | None = schema
    for part in re.split(r"\.(?![^\[]*\])", json_path.strip(".")):
        if node is None:
            return None
        if part in ("metadata",) and node is schema:
            return {"type": "object"}
        name, _, selection = part.partition("[")
        node = (node.get("properties") or {}).get(name)
        if selection and node is not None:
            node = node.get("items")
    return node


@pytest.mark.parametrize("crd", [FUNCTION_CRD, RUNTIME_CRD], ids=["WasmFunction", "WasmRuntime"])
def test_printer_columns_and_scale_paths_exist(crd: dict[str, Any]) -> None:
    [version] = crd["spec"]["versions"]
    schema = version["schema"]["openAPIV3Schema"]
    paths = [c["jsonPath"] for c in version["additionalPrinterColumns"]]
    paths += [p for k, p in version["subresources"].get("scale", {}).items() if k.endswith("Path")]
    for path in paths:
        assert resolve_path(schema, path) is not None, path


def test_key_defaults() -> None:
    spec = FUNCTION_SCHEMA["properties"]["spec"]["properties"]
    rollout = spec["rollout"]["properties"]
    assert (rollout["maxSurge"]["default"], rollout["maxUnavailable"]["default"]) == ("25%", "25%")
    health = spec["healthCheck"]["properties"]
    assert (health["periodSeconds"]["default"], health["timeoutSeconds"]["default"]) == (10, 5)
    metrics = spec["scaling"]["properties"]["metrics"]["default"]
    assert metrics[0]["resource"] == {
        "name": "cpu",
        "target": {"type": "Utilization", "averageUtilization": 70},
    }
    assert metrics[1]["resource"]["target"]["averageValue"] == "500Mi"
    assert spec["scaling"]["properties"]["engine"]["enum"] == ["operator", "hpa"]
    phase = FUNCTION_SCHEMA["properties"]["status"]["properties"]["phase"]
    assert phase["enum"] == [
        "Pending", "Deploying", "Ready", "Degraded", "Failed", "Invalid", "Idle",
    ]  # fmt: skip
    scaling = spec["scaling"]["properties"]
    assert (scaling["minReplicas"]["minimum"], scaling["scaleToZeroAfterSeconds"]["default"]) == (
        0,
        60,
    )
    assert scaling["reaction"]["enum"] == ["Standard", "Fast"]
    assert scaling["predictive"]["properties"]["model"]["enum"] == ["Holt", "SeasonalNaive"]


def test_schema_defaults_agree_with_the_parsers() -> None:
    """A spec defaulted by the API server and one the parser defaults must be the same."""
    spec_schema = FUNCTION_SCHEMA["properties"]["spec"]
    minimal = {"module": {"configMapRef": {"name": "wasm-x"}}, "scaling": {"maxReplicas": 3}}
    defaulted = apply_defaults(copy.deepcopy(minimal), spec_schema)
    assert validate(defaulted, spec_schema, ".spec") == []
    assert FunctionSpec.parse(defaulted) == FunctionSpec.parse(minimal)
    runtime_schema = RUNTIME_SCHEMA["properties"]["spec"]
    defaulted_rt = apply_defaults({}, runtime_schema)
    assert RuntimeSpec.parse(defaulted_rt) == RuntimeSpec.parse({})


# --------------------------------------------------------------------------- objects


def sample_documents() -> list[tuple[str, dict[str, Any]]]:
    docs = [("default-runtime.yaml", yaml.safe_load((CRDS / "default-runtime.yaml").read_text()))]
    for path in sorted(SAMPLES.glob("*.yaml")):
        docs += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


@pytest.mark.parametrize(
    ("name", "doc"), sample_documents(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_samples_satisfy_the_schema_and_parse(name: str, doc: dict[str, Any]) -> None:
    assert doc["apiVersion"] == API_VERSION, name
    schema = FUNCTION_SCHEMA if doc["kind"] == "WasmFunction" else RUNTIME_SCHEMA
    defaulted = apply_defaults(copy.deepcopy(doc), schema)
    assert validate(defaulted, schema) == []
    if doc["kind"] == "WasmFunction":
        assert "namespace" not in doc["metadata"], "samples go to the user's namespace"
        WasmFunction.from_body(defaulted)
    else:
        WasmRuntime.from_body(defaulted)


def test_samples_cover_every_workload() -> None:
    manifest = yaml.safe_load((FUNCTIONS / "manifest.yaml").read_text())
    workloads = {w["name"] for w in manifest["workloads"] if w["kind"] != "fixture"}
    refs = set()
    sources = set()
    for _, doc in sample_documents():
        if doc["kind"] != "WasmFunction":
            continue
        module = doc["spec"]["module"]
        sources |= set(module)
        if "image" in module:  # 127.0.0.1:5000/wasm/<workload>:<version>
            refs.add(module["image"].split("/")[-1].split(":")[0])
    assert workloads <= refs, "every workload has a sample, from the registry"
    assert {"image", "configMapRef", "url"} <= sources, "and each kind of source has one"
    kinds = {doc["kind"] for _, doc in sample_documents()}
    assert kinds == {"WasmFunction", "WasmRuntime"}


def test_validator_catches_mistakes() -> None:
    """The checker above must itself find errors, or the sample test proves nothing."""
    spec_schema = FUNCTION_SCHEMA["properties"]["spec"]
    bad = {
        "module": {"configMapRef": {"name": "x"}},
        "replica": 3,
        "limits": {"memory": "12 bananas"},
        "rollout": {"strategy": "BlueGreen"},
        "scaling": {"minReplicas": 1},
    }
    errors = validate(apply_defaults(bad, spec_schema), spec_schema, ".spec")
    assert any("replica: unknown field" in e for e in errors)
    assert any("limits.memory" in e for e in errors)
    assert any("BlueGreen" in e for e in errors)
    assert any("maxReplicas: required" in e for e in errors)
