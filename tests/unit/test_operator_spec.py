"""Parsing WasmFunction and WasmRuntime bodies into typed specs."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml
from wasmop.operator.spec import (
    DEFAULT_METRICS,
    FunctionSpec,
    MetricSpec,
    RuntimeSpec,
    SpecError,
    WasmFunction,
    WasmRuntime,
    resolve,
)
from wasmop.wellknown import API_VERSION, FUNCTION_KIND, RUNTIME_LABEL

CONFIG = Path(__file__).resolve().parents[2] / "operator" / "config"


def body(spec: dict, name: str = "hello", namespace: str = "demo") -> dict:
    return {
        "apiVersion": API_VERSION,
        "kind": FUNCTION_KIND,
        "metadata": {"name": name, "namespace": namespace, "uid": "u-1", "generation": 3},
        "spec": spec,
    }


def test_minimal_function_gets_schema_defaults() -> None:
    fn = WasmFunction.from_body(body({"module": {"configMapRef": {"name": "wasm-hello"}}}))
    assert (fn.name, fn.namespace, fn.uid, fn.generation) == ("hello", "demo", "u-1", 3)
    spec = fn.spec
    assert spec.module.kind == "configMapRef"
    assert spec.module.config_map is not None
    assert spec.module.config_map.key == "module.wasm"
    assert spec.version == "v1"
    assert spec.runtime == "default"
    assert spec.replicas == 1
    assert spec.rollout.strategy == "RollingUpdate"
    assert (spec.rollout.max_surge, spec.rollout.max_unavailable) == ("25%", "25%")
    assert (spec.health_check.period_seconds, spec.health_check.timeout_seconds) == (10, 5)
    assert spec.placement.toleration_seconds is None
    assert spec.revision_history_limit == 5
    assert spec.capabilities.env == ()
    assert spec.scaling is None
    assert spec.resources.requests.cpu is None


def test_full_function_spec() -> None:
    inline = base64.b64encode(b"\0asm\1\0\0\0").decode()
    fn = WasmFunction.from_body(
        body(
            {
                "module": {"inline": inline},
                "version": "2.0.0",
                "runtimeRef": {"name": "edge"},
                "replicas": 3,
                "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": 1}},
                "limits": {"timeoutMilliseconds": 500, "memory": "32Mi", "outputSize": "1Mi"},
                "rollout": {"maxSurge": 1, "maxUnavailable": 0},
                "placement": {"zone": "edge-a", "tolerationSeconds": 10},
                "capabilities": {"env": [{"name": "APP_MODE", "value": "fast"}]},
                "scaling": {
                    "minReplicas": 2,
                    "maxReplicas": 6,
                    "metrics": [
                        {
                            "type": "Pods",
                            "pods": {
                                "metric": {"name": "requests_per_second"},
                                "target": {"type": "AverageValue", "averageValue": "20"},
                            },
                        }
                    ],
                    "behavior": {"scaleDown": {"stabilizationWindowSeconds": 30}},
                },
            }
        )
    )
    spec = fn.spec
    assert spec.module.inline == b"\0asm\1\0\0\0"
    assert spec.module.kind == "inline"
    assert spec.resources.requests.cpu_millis == 250
    assert spec.resources.limits.cpu_millis == 1000
    assert spec.limits.memory_bytes == 32 * 2**20
    assert spec.limits.output_bytes == 2**20
    assert spec.rollout.max_unavailable == 0
    assert spec.placement.zone == "edge-a"
    assert spec.capabilities.env[0].name == "APP_MODE"
    assert spec.scaling is not None
    assert spec.scaling.metrics[0].name == "requests_per_second"
    assert spec.scaling.behavior.scale_down_window_seconds == 30
    assert spec.scaling.behavior.scale_up_window_seconds == 0
    # spec.replicas 3 lies inside [2, 6]; outside it the Deployment is clamped.
    assert spec.desired_replicas == 3


def test_desired_replicas_follow_scaling_bounds() -> None:
    base = {
        "module": {"url": "https://example.org/m.wasm"},
        "scaling": {"minReplicas": 2, "maxReplicas": 4},
    }
    assert FunctionSpec.parse({**base, "replicas": 1}).desired_replicas == 2
    assert FunctionSpec.parse({**base, "replicas": 9}).desired_replicas == 4
    assert FunctionSpec.parse({**base, "replicas": 3}).desired_replicas == 3
    assert FunctionSpec.parse({**base}).scaling.metrics == DEFAULT_METRICS  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({}, "spec.module"),
        ({"module": {}}, "spec.module"),
        (
            {"module": {"url": "https://x/m.wasm", "configMapRef": {"name": "m"}}},
            "spec.module",
        ),
        ({"module": {"inline": "%%%"}}, "spec.module.inline"),
        ({"module": {"url": "https://x"}, "replicas": "two"}, "spec.replicas"),
        (
            {"module": {"url": "https://x"}, "scaling": {"minReplicas": 1}},
            "spec.scaling.maxReplicas",
        ),
        (
            {"module": {"url": "https://x"}, "scaling": {"minReplicas": 5, "maxReplicas": 2}},
            "spec.scaling.minReplicas",
        ),
        (
            {"module": {"url": "https://x"}, "rollout": {"strategy": "BlueGreen"}},
            "spec.rollout.strategy",
        ),
        (
            {"module": {"url": "https://x"}, "resources": {"limits": {"memory": [1]}}},
            "spec.resources.limits.memory",
        ),
        # Found by the property suites (test_operator_properties, test_spec_properties).
        # A malformed quantity is a SpecError naming its field, not a QuantityError raised
        # later, in validation.
        (
            {"module": {"url": "https://x"}, "resources": {"requests": {"cpu": "66K"}}},
            "spec.resources.requests.cpu",
        ),
        ({"module": {"url": "https://x"}, "limits": {"outputSize": ""}}, "spec.limits.outputSize"),
        # Negative quantities parse, but no Pod may have them: the Deployment was refused
        # on every retry.
        (
            {"module": {"url": "https://x"}, "resources": {"requests": {"cpu": "-1"}}},
            "spec.resources.requests.cpu",
        ),
        ({"module": {"url": "https://x"}, "limits": {"outputSize": -5}}, "spec.limits.outputSize"),
        ({"module": {"url": "https://x"}, "rollout": {"maxSurge": -1}}, "spec.rollout.maxSurge"),
        # A Deployment needs its progress deadline beyond minReadySeconds.
        (
            {
                "module": {"url": "https://x"},
                "rollout": {"minReadySeconds": 5, "progressDeadlineSeconds": 5},
            },
            "spec.rollout.progressDeadlineSeconds",
        ),
    ],
)
def test_spec_errors_name_the_field(spec: dict, field: str) -> None:
    with pytest.raises(SpecError) as err:
        FunctionSpec.parse(spec)
    assert err.value.field == field


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"maximums": {"resources": {"cpu": ""}}}, "spec.maximums.resources.cpu"),
        ({"maximums": {"limits": {"memory": "-1Mi"}}}, "spec.maximums.limits.memory"),
        # Whitespace in the image made every function's Deployment on the runtime invalid.
        ({"engine": {"image": " wasmop/runtime"}}, "spec.engine.image"),
        ({"engine": {"image": ""}}, "spec.engine.image"),
    ],
)
def test_a_runtime_s_malformed_quantity_or_image_is_a_spec_error(spec: dict, field: str) -> None:
    with pytest.raises(SpecError) as err:
        RuntimeSpec.parse(spec)
    assert err.value.field == field


def test_metric_round_trip_to_hpa_shape() -> None:
    raw = {
        "type": "Resource",
        "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "500Mi"}},
    }
    metric = MetricSpec.parse(raw, "m")
    assert metric.target_value == "500Mi"
    assert metric.to_manifest() == raw
    with pytest.raises(SpecError):
        MetricSpec.parse(
            {
                "type": "Pods",
                "pods": {
                    "metric": {"name": "concurrency"},
                    "target": {"type": "Utilization", "averageUtilization": 5},
                },
            },
            "m",
        )


def test_runtime_defaults_without_spec() -> None:
    rt = RuntimeSpec.parse({})
    assert rt.engine.name == "wasmtime"
    assert rt.defaults.limits.timeout_ms == 5000
    assert rt.defaults.resources.requests.memory == "64Mi"
    assert rt.maximums.resources.memory == "1Gi"
    assert rt.maximums.replicas is None
    assert rt.capabilities.env.allowed is False
    assert dict(rt.node_selector) == {RUNTIME_LABEL: "wasmtime"}
    assert "simd" in rt.features.enabled()
    assert "threads" not in rt.features.enabled()


def test_shipped_runtimes_parse() -> None:
    default = WasmRuntime.from_body(
        yaml.safe_load((CONFIG / "crds" / "default-runtime.yaml").read_text())
    )
    assert default.name == "default"
    assert default.spec.capabilities.env.allowed
    assert "APP_*" in default.spec.capabilities.env.names
    edge = WasmRuntime.from_body(
        yaml.safe_load((CONFIG / "samples" / "runtime-edge.yaml").read_text())
    )
    assert edge.spec.maximums.replicas == 4
    assert edge.spec.node_selector["wasm.bits-dissertation.io/tier"] == "edge"
    # Unset defaults fall back to the built-in ones, like the schema's defaults.
    assert edge.spec.features.simd is True


def test_resolve_fills_from_runtime_defaults() -> None:
    runtime = WasmRuntime(name="default")
    fn = WasmFunction.from_body(
        body(
            {
                "module": {"url": "https://x/m"},
                "resources": {"limits": {"memory": "32Mi"}},
                "limits": {"timeoutMilliseconds": 100},
            }
        )
    )
    resolved = resolve(fn, runtime)
    assert resolved.limits.timeout_ms == 100
    assert resolved.limits.memory == "64Mi"
    assert resolved.resources.limits.memory == "32Mi"
    assert resolved.resources.limits.cpu == "500m"
    # The default 64Mi request would exceed the function's own 32Mi limit: it follows the limit.
    assert resolved.resources.requests.memory == "32Mi"
    assert resolved.resources.requests.cpu == "100m"


def test_scale_to_zero_fast_reaction_and_prediction_parse() -> None:
    scaling = FunctionSpec.parse(
        {
            "module": {"configMapRef": {"name": "wasm-x"}},
            "scaling": {
                "minReplicas": 0,
                "maxReplicas": 4,
                "scaleToZeroAfterSeconds": 30,
                "reaction": "Fast",
                "panicWindowSeconds": 3,
                "predictive": {
                    "enabled": True,
                    "horizonSeconds": 15,
                    "model": "SeasonalNaive",
                    "seasonSeconds": 60,
                },
            },
        }
    ).scaling
    assert scaling is not None
    assert scaling.scales_to_zero and scaling.fast
    assert (scaling.scale_to_zero_after_seconds, scaling.panic_window_seconds) == (30, 3)
    predictive = scaling.predictive
    assert (predictive.enabled, predictive.horizon_seconds) == (True, 15)
    assert (predictive.model, predictive.season_seconds) == ("SeasonalNaive", 60)
    defaults = FunctionSpec.parse(
        {"module": {"configMapRef": {"name": "wasm-x"}}, "scaling": {"maxReplicas": 2}}
    ).scaling
    assert defaults is not None
    assert (defaults.min_replicas, defaults.reaction, defaults.predictive.enabled) == (
        1,
        "Standard",
        False,
    )


def test_zero_replicas_stay_zero_whatever_the_bounds() -> None:
    """``kubectl scale --replicas=0`` idles any function: 0 is not clamped up to
    minReplicas (it was, so the Deployment kept a Pod while the function said paused)."""
    base = {
        "module": {"configMapRef": {"name": "m"}},
        "scaling": {"minReplicas": 2, "maxReplicas": 4},
    }
    assert FunctionSpec.parse({**base, "replicas": 0}).desired_replicas == 0
    zero_ok = {
        "module": {"configMapRef": {"name": "m"}},
        "scaling": {"minReplicas": 0, "maxReplicas": 4},
    }
    assert FunctionSpec.parse({**zero_ok, "replicas": 0}).desired_replicas == 0
    assert FunctionSpec.parse({**zero_ok, "replicas": 2}).desired_replicas == 2


@pytest.mark.parametrize(
    ("scaling", "field"),
    [
        ({"maxReplicas": 2, "minReplicas": -1}, "spec.scaling.minReplicas"),
        ({"maxReplicas": 2, "scaleToZeroAfterSeconds": 0}, "spec.scaling.scaleToZeroAfterSeconds"),
        ({"maxReplicas": 2, "reaction": "Instant"}, "spec.scaling.reaction"),
        ({"maxReplicas": 2, "panicWindowSeconds": 0}, "spec.scaling.panicWindowSeconds"),
        ({"maxReplicas": 2, "predictive": {"model": "Arima"}}, "spec.scaling.predictive.model"),
        (
            {"maxReplicas": 2, "predictive": {"model": "SeasonalNaive"}},
            "spec.scaling.predictive.seasonSeconds",
        ),
        (
            {"maxReplicas": 2, "predictive": {"horizonSeconds": 0}},
            "spec.scaling.predictive.horizonSeconds",
        ),
        ({"maxReplicas": 2, "engine": "hpa", "minReplicas": 0}, "spec.scaling.minReplicas"),
        ({"maxReplicas": 2, "engine": "hpa", "reaction": "Fast"}, "spec.scaling.reaction"),
        (
            {"maxReplicas": 2, "engine": "hpa", "predictive": {"enabled": True}},
            "spec.scaling.predictive",
        ),
    ],
)
def test_bad_smart_scaling_is_refused_with_its_field(scaling: dict, field: str) -> None:
    with pytest.raises(SpecError) as caught:
        FunctionSpec.parse({"module": {"configMapRef": {"name": "m"}}, "scaling": scaling})
    assert caught.value.field == field
