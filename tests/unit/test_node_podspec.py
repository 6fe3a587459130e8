"""What a wasm node reads from a Pod and writes back as its status (no cluster needed)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from wasmop.node.podspec import (
    ContainerState,
    ModuleSource,
    PodSpecError,
    Probe,
    plan_container,
    pod_status,
)
from wasmop.operator.owned_objects import build_deployment, configmap_name, pack_module
from wasmop.operator.spec import RuntimeSpec, WasmFunction, WasmRuntime, resolve

MODULE = b"\0asm\1\0\0\0" + b"\x01\x02\x03" * 2000  # compresses: the ConfigMap key is .gz


def operator_pod(**spec: Any) -> dict[str, Any]:
    """A Pod as the Deployment controller makes it from the operator's pod template."""
    function = WasmFunction.from_body(
        {
            "metadata": {"name": "fib", "namespace": "bench", "uid": "u-1"},
            "spec": {"module": {"configMapRef": {"name": "wasm-fib"}}, **spec},
        }
    )
    runtime = WasmRuntime(name="default", spec=RuntimeSpec.parse({}))
    template = build_deployment(resolve(function, runtime), pack_module(MODULE), revision=1)
    return {
        "metadata": {"name": "fib-abc", "namespace": "bench", "uid": "pod-uid"},
        "spec": copy.deepcopy(template["spec"]["template"]["spec"]),
        "status": {},
    }


def test_the_operators_pod_template_is_a_plan_the_node_can_run() -> None:
    bundle = pack_module(MODULE)
    pod = operator_pod()
    plan = plan_container(pod)
    configmap = pod["spec"]["volumes"][0]["configMap"]["name"]
    assert plan.module == ModuleSource(configmap, bundle.key)
    assert configmap == configmap_name("fib", bundle.digest)  # the one the operator made
    assert plan.port == 8080
    assert plan.readiness == Probe("/readyz", 8080, 0.0, 10.0, 5.0, 1, 3)
    assert plan.liveness == Probe("/healthz", 8080, 0.0, 10.0, 5.0, 1, 3)
    assert plan.env["WASMOP_MODULE_PATH"] == f"/module/{bundle.key}"


def test_the_operators_pods_drain_before_they_stop() -> None:
    assert plan_container(operator_pod()).pre_stop_sleep_s == 2.0
    pod = operator_pod()
    del pod["spec"]["containers"][0]["lifecycle"]
    assert plan_container(pod).pre_stop_sleep_s == 0.0


def test_without_a_module_path_the_mounted_configmap_is_used() -> None:
    pod = operator_pod()
    container = pod["spec"]["containers"][0]
    container["env"] = [e for e in container["env"] if e["name"] != "WASMOP_MODULE_PATH"]
    plan = plan_container(pod)
    assert plan.module.key is None  # the first default key that exists
    assert plan.module.configmap == pod["spec"]["volumes"][0]["configMap"]["name"]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            lambda s: s["containers"].append(dict(s["containers"][0], name="sidecar")),
            "UnsupportedPod",
        ),
        (lambda s: s.update(initContainers=[{"name": "init"}]), "UnsupportedPod"),
        (lambda s: s.update(volumes=[]), "ModuleNotMounted"),
        (
            lambda s: s["containers"][0]["env"].append(
                {"name": "WASMOP_MODULE_PATH", "value": "/elsewhere/m.wasm"}
            ),
            "ModuleNotMounted",
        ),
        (lambda s: s["containers"][0].update(readinessProbe={"exec": {}}), "UnsupportedProbe"),
        (
            lambda s: s["containers"][0].update(
                livenessProbe={"httpGet": {"path": "/", "port": "metrics"}}
            ),
            "InvalidProbe",
        ),
        (
            lambda s: s["containers"][0].update(lifecycle={"preStop": {"exec": {"command": []}}}),
            "UnsupportedLifecycleHook",
        ),
    ],
    ids=[
        "two containers",
        "init container",
        "no volume",
        "path outside",
        "exec",
        "port name",
        "preStop exec",
    ],
)
def test_pods_a_wasm_node_cannot_run_say_why(change: Any, reason: str) -> None:
    pod = operator_pod()
    change(pod["spec"])
    with pytest.raises(PodSpecError) as caught:
        plan_container(pod)
    assert caught.value.reason == reason


def test_probe_defaults_are_kubernetes_defaults() -> None:
    probe = Probe.parse({"httpGet": {"port": 9000}}, {}, 8080)
    assert probe == Probe(path="/", port=9000)
    assert (probe.period_s, probe.timeout_s, probe.failure_threshold) == (10.0, 1.0, 3)
    assert Probe.parse(None, {}, 8080) is None


def conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def test_a_running_ready_pod_reports_running_with_its_addresses() -> None:
    container = ContainerState("function", "img", state="running", ready=True)
    container.started_at = "2026-01-01T00:00:00Z"
    status = pod_status(
        operator_pod(), container, host_ip="10.244.0.6", pod_ip="10.244.1.10", start_time="t0"
    )
    assert status["phase"] == "Running"
    assert (status["hostIP"], status["podIP"]) == ("10.244.0.6", "10.244.1.10")
    assert status["podIPs"] == [{"ip": "10.244.1.10"}]
    assert conditions(status)["Ready"]["status"] == "True"
    assert status["containerStatuses"][0]["state"] == {
        "running": {"startedAt": container.started_at}
    }
    assert status["containerStatuses"][0]["started"] is True


def test_a_waiting_pod_is_pending_and_not_ready_with_a_reason() -> None:
    container = ContainerState("function", "img", reason="ModuleNotFound", message="no key")
    status = pod_status(operator_pod(), container, host_ip="h", pod_ip=None, start_time="t0")
    assert status["phase"] == "Pending"
    assert "podIP" not in status
    ready = conditions(status)["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "ContainersNotReady")
    waiting = status["containerStatuses"][0]["state"]["waiting"]
    assert waiting == {"reason": "ModuleNotFound", "message": "no key"}
    assert conditions(status)["PodReadyToStartContainers"]["status"] == "False"


@pytest.mark.parametrize(("exit_code", "phase"), [(0, "Succeeded"), (137, "Failed")])
def test_a_terminated_pod_that_never_restarts_ends(exit_code: int, phase: str) -> None:
    pod = operator_pod()
    pod["spec"]["restartPolicy"] = "Never"
    container = ContainerState("function", "img", state="terminated", exit_code=exit_code)
    assert pod_status(pod, container, host_ip="h", pod_ip="p", start_time="t")["phase"] == phase


def test_condition_transition_times_move_only_when_the_status_does() -> None:
    pod = operator_pod()
    pod["status"] = {
        "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": "then"},
            {"type": "Initialized", "status": "True", "lastTransitionTime": "then"},
        ]
    }
    container = ContainerState("function", "img", state="running", ready=False)
    status = pod_status(pod, container, host_ip="h", pod_ip="p", start_time="t")
    assert conditions(status)["Initialized"]["lastTransitionTime"] == "then"
    assert conditions(status)["Ready"]["lastTransitionTime"] != "then"  # True -> False


def test_last_state_carries_the_previous_termination() -> None:
    last = {"exitCode": 137, "reason": "Error"}
    container = ContainerState("function", "img", restart_count=2, last_terminated=last)
    reported = container.to_status()
    assert reported["lastState"] == {"terminated": last}
    assert reported["restartCount"] == 2
