"""The operator's own checks on any spec, without the API server in front: it parses,
judges and builds, or refuses with a reason; it never raises anything else. (The API
server admits far less; tests/integration/test_spec_properties.py runs the same
generators through it.) Seeded: WASMOP_SPEC_SEED and WASMOP_SPEC_EXAMPLES replay a run."""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from spec_strategies import function_specs, owned_objects, runtime_specs
from wasmop.oci import ReferenceError
from wasmop.operator.spec import SpecError, WasmFunction, WasmRuntime
from wasmop.operator.validation import problem_from_spec_error, validate_function, validate_runtime

SEED = int(os.environ.get("WASMOP_SPEC_SEED", "20261130"))
MODULE = b"\0asm\1\0\0\0"


@seed(SEED)
@settings(
    max_examples=int(os.environ.get("WASMOP_SPEC_EXAMPLES", "1000")),
    deadline=None,
    database=None,
    phases=(Phase.explicit, Phase.generate, Phase.shrink),
    suppress_health_check=list(HealthCheck),
)
@given(
    runtime_spec=st.one_of(st.none(), runtime_specs()),
    function_spec=function_specs(["default", "generated"], "0" * 64, "AGFzbQEAAAA="),
)
def test_the_operator_judges_any_spec_without_crashing(
    runtime_spec: dict[str, Any] | None, function_spec: dict[str, Any]
) -> None:
    meta = {"name": "fn", "namespace": "tenant", "uid": "uid-1"}
    try:
        function = WasmFunction.from_body({"metadata": meta, "spec": function_spec})
        runtime = WasmRuntime.from_body({"metadata": {"name": "rt"}, "spec": runtime_spec or {}})
    except SpecError as exc:
        problem = problem_from_spec_error(exc)
        assert problem.reason == "InvalidSpec" and problem.message and problem.field
        return
    problems = validate_runtime(runtime) + validate_function(function, runtime, module=MODULE)
    for problem in problems:
        assert problem.reason and problem.message and problem.field.startswith("spec")
    if problems:
        return
    try:
        objects = owned_objects(function, runtime, MODULE)
    except ReferenceError as exc:
        assert str(exc)
        return
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    # The runtime's selector is in every Pod's selector, whatever the placement said.
    selector = deployment["spec"]["template"]["spec"]["nodeSelector"]
    assert runtime.spec.node_selector.items() <= selector.items()
