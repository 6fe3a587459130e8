"""The WASMOP_* contract: what the operator writes into a Pod is what a node runs."""

from __future__ import annotations

import pytest
import wasmtime
from wasmop.operator.modules import compile_check
from wasmop.operator.owned_objects import function_env, pack_module
from wasmop.operator.spec import RuntimeSpec, WasmFunction, WasmRuntime, resolve
from wasmop.runtime import EngineFeatures, RuntimeConfigError
from wasmop.runtime.podenv import engine_features, from_env

# A servable module that uses a SIMD instruction.
SIMD_WAT = """
(module
  (memory (export "memory") 1)
  (func (export "_start") (drop (i32x4.splat (i32.const 1)))))
"""


def pod_env(function_spec: dict, runtime_spec: dict | None = None) -> dict[str, str]:
    function = WasmFunction.from_body(
        {
            "metadata": {"name": "fib", "namespace": "bench", "uid": "u"},
            "spec": {"module": {"configMapRef": {"name": "wasm-fib"}}, **function_spec},
        }
    )
    runtime = WasmRuntime(name="default", spec=RuntimeSpec.parse(runtime_spec or {}))
    env = function_env(resolve(function, runtime), pack_module(b"\0asm\1\0\0\0"), 1)
    return {item["name"]: item["value"] for item in env}


def test_a_pod_runs_with_the_limits_and_features_the_operator_wrote() -> None:
    env = pod_env(
        {
            "limits": {
                "timeoutMilliseconds": 250,
                "memory": "32Mi",
                "outputSize": 4096,
                "fuel": 10**6,
            },
            "capabilities": {"env": [{"name": "GREETING", "value": "hi"}]},
        },
        {"features": {"simd": False, "threads": False}},
    )
    environment = from_env(env, "fib-abc")
    limits = environment.function.limits
    assert limits.timeout_s == pytest.approx(0.25)
    assert limits.memory_bytes == 32 * 2**20
    assert limits.output_bytes == 4096
    assert limits.fuel == 10**6
    assert environment.consume_fuel  # "fuel" is a default feature and a budget is set
    assert environment.features.simd is False
    assert environment.features.bulk_memory is True
    assert dict(environment.function.env) == {"GREETING": "hi"}
    assert environment.module_path == f"/module/{env['WASMOP_MODULE_PATH'].rsplit('/', 1)[1]}"


def test_the_operator_checks_a_module_with_the_engine_its_pods_get() -> None:
    """compile_check (operator) and from_env (node) build the same engine features from
    the runtime's feature list: one mapping, so they cannot disagree."""
    for features in (
        {},
        {"simd": False},
        {"memory64": True, "multiValue": False},
        {"multiMemory": True},
    ):
        runtime = RuntimeSpec.parse({"features": features})
        names = runtime.features.enabled()
        pod = from_env({"WASMOP_FEATURES": ",".join(names)}, "p")
        assert pod.features == engine_features(names)
    simd = bytes(wasmtime.wat2wasm(SIMD_WAT))
    assert compile_check(simd, RuntimeSpec.parse({}).features.enabled()) is None
    off = RuntimeSpec.parse({"features": {"simd": False}}).features.enabled()
    reason, message = compile_check(simd, off) or ("", "")
    assert reason == "UnsupportedFeature", message
    assert not RuntimeSpec.parse({}).features.multi_memory
    assert from_env({"WASMOP_FEATURES": "multi-memory"}, "p").features.multi_memory


def test_without_features_a_pod_gets_the_engine_defaults() -> None:
    environment = from_env({}, "p")
    assert environment.features == EngineFeatures()
    assert not environment.consume_fuel
    assert environment.function.max_concurrency == 4


def test_fuel_is_consumed_only_with_a_budget() -> None:
    assert not from_env({"WASMOP_FEATURES": "simd,fuel"}, "p").consume_fuel
    assert from_env({"WASMOP_FEATURES": "simd,fuel", "WASMOP_FUEL": "5"}, "p").consume_fuel


def test_only_granted_variables_reach_the_guest() -> None:
    env = {"WASMOP_GUEST_ENV": "A,MISSING", "A": "1", "B": "2"}
    assert dict(from_env(env, "p").function.env) == {"A": "1"}


@pytest.mark.parametrize(
    "variable",
    ["WASMOP_TIMEOUT_MS", "WASMOP_MEMORY_BYTES", "WASMOP_FUEL", "WASMOP_MAX_CONCURRENCY"],
)
def test_a_malformed_number_names_its_variable(variable: str) -> None:
    with pytest.raises(RuntimeConfigError, match=variable):
        from_env({variable: "lots"}, "p")
