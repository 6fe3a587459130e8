"""What only the operator can judge: a function against its WasmRuntime."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import pytest
from wasmop.operator.spec import RuntimeSpec, SpecError, WasmFunction, WasmRuntime
from wasmop.operator.validation import (
    Problem,
    Reason,
    check_digest,
    problem_from_spec_error,
    summarize,
    validate_function,
    validate_runtime,
)
from wasmop.wellknown import RUNTIME_LABEL, ZONE_LABEL

ZONE = ZONE_LABEL


def function(**spec: object) -> WasmFunction:
    return WasmFunction.from_body(
        {
            "metadata": {"name": "fn", "namespace": "ns"},
            "spec": {"module": {"configMapRef": {"name": "wasm-fn"}}, **spec},
        }
    )


def runtime(name: str = "default", **spec: object) -> WasmRuntime:
    return WasmRuntime(name=name, spec=RuntimeSpec.parse(spec))


EDGE = runtime(
    "edge",
    defaults={"resources": {"limits": {"memory": "64Mi"}}, "limits": {"memory": "32Mi"}},
    maximums={
        "resources": {"cpu": "500m", "memory": "128Mi"},
        "limits": {"timeoutMilliseconds": 10000, "memory": "64Mi", "outputSize": "1Mi"},
        "replicas": 4,
    },
    capabilities={"env": {"allowed": False}},
)


def reasons(problems: Iterable[Problem]) -> list[str]:
    return [p.reason for p in problems]


def test_valid_function_has_no_problems() -> None:
    assert validate_function(function(), runtime()) == []
    assert summarize([]) == ("Valid", "the spec fits its runtime")


def test_missing_runtime() -> None:
    problems = validate_function(function(runtimeRef={"name": "gone"}), None)
    assert reasons(problems) == [Reason.RUNTIME_NOT_FOUND]
    assert problems[0].field == "spec.runtimeRef.name"
    assert '"gone"' in problems[0].message


def test_per_request_limits_above_maximum() -> None:
    problems = validate_function(
        function(limits={"timeoutMilliseconds": 20000, "memory": "128Mi", "outputSize": "2Mi"}),
        EDGE,
    )
    pairs = [(p.field, p.reason) for p in problems]
    assert pairs[:3] == [
        ("spec.limits.timeoutMilliseconds", Reason.LIMIT_ABOVE_MAXIMUM),
        ("spec.limits.memory", Reason.LIMIT_ABOVE_MAXIMUM),
        ("spec.limits.outputSize", Reason.LIMIT_ABOVE_MAXIMUM),
    ]
    assert "20000ms is above the maximum 10000ms" in problems[0].message
    assert 'WasmRuntime "edge"' in problems[1].message
    # 128Mi per request also exceeds the 64Mi pod limit inherited from the runtime.
    assert pairs[3:] == [("spec.limits.memory", Reason.LIMIT_ABOVE_RESOURCES)]


def test_resources_above_maximum() -> None:
    problems = validate_function(
        function(resources={"requests": {"cpu": "1"}, "limits": {"cpu": "2", "memory": "256Mi"}}),
        EDGE,
    )
    fields = {p.field: p.reason for p in problems}
    assert fields["spec.resources.requests.cpu"] == Reason.RESOURCE_ABOVE_MAXIMUM
    assert fields["spec.resources.limits.cpu"] == Reason.RESOURCE_ABOVE_MAXIMUM
    assert fields["spec.resources.limits.memory"] == Reason.RESOURCE_ABOVE_MAXIMUM


def test_replicas_above_runtime_maximum() -> None:
    assert reasons(validate_function(function(replicas=5), EDGE)) == [Reason.REPLICAS_ABOVE_MAXIMUM]
    problems = validate_function(function(replicas=2, scaling={"maxReplicas": 10}), EDGE)
    assert [p.field for p in problems] == ["spec.scaling.maxReplicas"]


def test_env_not_allowed_by_runtime() -> None:
    fn = function(capabilities={"env": [{"name": "APP_MODE", "value": "x"}]})
    problems = validate_function(fn, EDGE)
    assert reasons(problems) == [Reason.CAPABILITY_NOT_ALLOWED]
    assert problems[0].field == "spec.capabilities.env[0].name"
    assert "APP_MODE" in problems[0].message


def test_env_names_must_match_allowed_patterns() -> None:
    rt = runtime(capabilities={"env": {"allowed": True, "names": ["APP_*", "LOG_LEVEL"]}})
    ok = function(capabilities={"env": [{"name": "APP_X"}, {"name": "LOG_LEVEL"}]})
    assert validate_function(ok, rt) == []
    bad = function(capabilities={"env": [{"name": "APP_X"}, {"name": "AWS_SECRET_ACCESS_KEY"}]})
    problems = validate_function(bad, rt)
    assert [p.field for p in problems] == ["spec.capabilities.env[1].name"]
    assert problems[0].reason == Reason.CAPABILITY_NOT_ALLOWED


def test_reserved_env_prefix_is_refused_even_when_env_is_open() -> None:
    rt = runtime(capabilities={"env": {"allowed": True}})
    problems = validate_function(
        function(capabilities={"env": [{"name": "WASMOP_TIMEOUT_MS"}]}), rt
    )
    assert reasons(problems) == [Reason.CAPABILITY_NOT_ALLOWED]


def test_fuel_needs_the_feature() -> None:
    rt = runtime(features={"fuel": False})
    problems = validate_function(function(limits={"fuel": 1000}), rt)
    assert reasons(problems) == [Reason.FEATURE_NOT_SUPPORTED]


def test_effective_request_memory_must_fit_the_pod() -> None:
    # The function's 100Mi per-request memory is fine for the runtime maximum but above the
    # 64Mi pod limit it inherits from the runtime's defaults: the schema could not see this.
    problems = validate_function(
        function(limits={"memory": "100Mi"}),
        runtime(defaults={"resources": {"limits": {"memory": "64Mi"}}}),
    )
    assert reasons(problems) == [Reason.LIMIT_ABOVE_RESOURCES]
    assert problems[0].field == "spec.limits.memory"


def test_explicit_request_above_inherited_limit() -> None:
    problems = validate_function(function(resources={"requests": {"cpu": "800m"}}), runtime())
    assert reasons(problems) == [Reason.REQUEST_ABOVE_LIMIT]
    assert problems[0].field == "spec.resources.requests.cpu"


def test_digest_pin() -> None:
    module = b"\0asm\1\0\0\0"
    digest = hashlib.sha256(module).hexdigest()
    assert check_digest(module, digest) == []
    assert check_digest(module, None) == []
    [problem] = check_digest(module, "0" * 64)
    assert problem.reason == Reason.DIGEST_MISMATCH
    assert digest in problem.message
    fn = function(module={"url": "http://127.0.0.1/m.wasm", "sha256": "0" * 64})
    assert reasons(validate_function(fn, runtime(), module=module)) == [Reason.DIGEST_MISMATCH]


class ForbiddenImport(Exception):
    reason = "ForbiddenImport"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def test_module_check_seam() -> None:
    module = b"\0asm\1\0\0\0"
    seen: list[RuntimeSpec] = []

    def compatible(data: bytes, rt: RuntimeSpec) -> list[Problem]:
        seen.append(rt)
        return []

    rt = runtime()
    assert validate_function(function(), rt, module=module, check_module=compatible) == []
    assert seen == [rt.spec]

    def reports(data: bytes, rt: RuntimeSpec) -> list[Problem]:
        return [Problem("spec.module", Reason.MODULE_INCOMPATIBLE, "needs threads")]

    assert reasons(validate_function(function(), rt, module=module, check_module=reports)) == [
        Reason.MODULE_INCOMPATIBLE
    ]

    def raises_reasoned(data: bytes, rt: RuntimeSpec) -> None:
        raise ForbiddenImport("imports env::host_socket_connect")

    [problem] = validate_function(function(), rt, module=module, check_module=raises_reasoned)
    assert (problem.field, problem.reason) == ("spec.module", "ForbiddenImport")
    assert "env::host_socket_connect" in problem.message

    def crashes(data: bytes, rt: RuntimeSpec) -> None:
        raise RuntimeError("boom")

    [problem] = validate_function(function(), rt, module=module, check_module=crashes)
    assert problem.reason == Reason.MODULE_INVALID
    assert "boom" in problem.message


def test_module_check_not_run_without_bytes() -> None:
    def never(data: bytes, rt: RuntimeSpec) -> None:
        raise AssertionError("must not run")

    assert validate_function(function(), runtime(), check_module=never) == []


def test_summarize_and_spec_errors() -> None:
    problems = [
        Problem("spec.limits.memory", Reason.LIMIT_ABOVE_MAXIMUM, "128Mi is above 64Mi"),
        Problem("spec.replicas", Reason.REPLICAS_ABOVE_MAXIMUM, "9 is above 4"),
    ]
    reason, message = summarize(problems)
    assert reason == "LimitAboveMaximum"
    assert message == "spec.limits.memory: 128Mi is above 64Mi; spec.replicas: 9 is above 4"
    with pytest.raises(SpecError) as err:
        WasmFunction.from_body({"metadata": {"name": "x"}, "spec": {}})
    problem = problem_from_spec_error(err.value)
    assert (problem.field, problem.reason) == ("spec.module", Reason.INVALID_SPEC)


def test_runtime_defaults_above_maximum() -> None:
    assert validate_runtime(runtime()) == []
    rt = runtime(
        defaults={"limits": {"timeoutMilliseconds": 9000}, "resources": {"limits": {"cpu": "4"}}},
        maximums={"limits": {"timeoutMilliseconds": 5000}},
    )
    problems = validate_runtime(rt)
    assert {p.field for p in problems} == {
        "spec.defaults.limits.timeoutMilliseconds",
        "spec.defaults.resources.limits.cpu",
    }
    assert set(reasons(problems)) == {Reason.DEFAULT_ABOVE_MAXIMUM}


def test_placement_may_not_use_the_platform_s_own_labels() -> None:
    """The runtime's label is the runtime's to set: a function naming it (to reach another
    runtime's nodes) is Invalid, whatever the value."""
    for value in ("other-runtime", "wasmtime"):
        problems = validate_function(
            function(placement={"nodeSelector": {RUNTIME_LABEL: value}}), runtime()
        )
        assert reasons(problems) == [Reason.PLACEMENT_NOT_ALLOWED]
        assert problems[0].field == f"spec.placement.nodeSelector[{RUNTIME_LABEL}]"


def test_placement_may_narrow_the_runtime_s_nodes_but_not_contradict_them() -> None:
    rt = runtime("edge", nodeSelector={RUNTIME_LABEL: "wasmtime", "tier": "edge", ZONE: "a"})
    narrower = function(placement={"zone": "a", "nodeSelector": {"tier": "edge", "disk": "ssd"}})
    assert validate_function(narrower, rt) == []
    problems = validate_function(function(placement={"nodeSelector": {"tier": "core"}}), rt)
    assert [(p.field, p.reason) for p in problems] == [
        ("spec.placement.nodeSelector[tier]", Reason.PLACEMENT_CONFLICT)
    ]
    assert 'WasmRuntime "edge" selects tier=edge' in problems[0].message
    problems = validate_function(function(placement={"zone": "b"}), rt)
    assert [(p.field, p.reason) for p in problems] == [
        ("spec.placement.zone", Reason.PLACEMENT_CONFLICT)
    ]


@pytest.mark.parametrize(
    ("selector", "field"),
    [
        ({"bad key": "x"}, "spec.placement.nodeSelector[bad key]"),
        ({"-disk": "x"}, "spec.placement.nodeSelector[-disk]"),
        ({"a/b/c": "x"}, "spec.placement.nodeSelector[a/b/c]"),
        ({"Example.com/disk": "x"}, "spec.placement.nodeSelector[Example.com/disk]"),
        ({"d" * 64: "x"}, f"spec.placement.nodeSelector[{'d' * 64}]"),
        ({"p" * 254 + "/disk": "x"}, f"spec.placement.nodeSelector[{'p' * 254}/disk]"),
        ({"/disk": "x"}, "spec.placement.nodeSelector[/disk]"),
        ({"disk": "-ssd"}, "spec.placement.nodeSelector[disk]"),
        ({"disk": "s" * 64}, "spec.placement.nodeSelector[disk]"),
        ({"disk": "a b"}, "spec.placement.nodeSelector[disk]"),
    ],
)
def test_placement_label_keys_and_values_are_valid_labels(
    selector: dict[str, str], field: str
) -> None:
    problems = validate_function(function(placement={"nodeSelector": selector}), runtime())
    assert [(p.field, p.reason) for p in problems] == [(field, Reason.INVALID_PLACEMENT)]
    assert problems[0].message


def test_valid_placement_labels() -> None:
    selector = {"example.com/disk": "ssd", "a.b-c.d/e_f.g-h": "", "gpu": "A_1.x-2", "k8s": "1"}
    assert validate_function(function(placement={"nodeSelector": selector}), runtime()) == []
    assert validate_function(function(placement={"zone": "edge-a_1.b"}), runtime()) == []
    problems = validate_function(function(placement={"zone": "edge a"}), runtime())
    assert [(p.field, p.reason) for p in problems] == [
        ("spec.placement.zone", Reason.INVALID_PLACEMENT)
    ]


def test_a_runtime_s_node_selector_must_be_valid_labels() -> None:
    problems = validate_runtime(runtime(nodeSelector={"bad key": "x", RUNTIME_LABEL: "wasm time"}))
    assert {(p.field, p.reason) for p in problems} == {
        ("spec.nodeSelector[bad key]", Reason.INVALID_PLACEMENT),
        (f"spec.nodeSelector[{RUNTIME_LABEL}]", Reason.INVALID_PLACEMENT),
    }
