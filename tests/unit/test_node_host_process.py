"""The host-process runtime's pure parts: which Pods the system node runs (its own images
only, non-root, supported volumes and env) and how limits become cgroup settings."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from wasmop import __version__
from wasmop.cluster.layout import repo_root
from wasmop.kube import KubeConfig
from wasmop.node.cgroups import CgroupLimits, cpu_quota_us, cpu_shares, own_group
from wasmop.node.host_plan import EnvFrom, EnvVar, check_image, field_value, plan_process
from wasmop.node.podspec import PodSpecError

MANIFEST = repo_root() / "operator" / "config" / "operators" / "operator.yaml"


def deployment_pod(name: str) -> dict[str, Any]:
    """A Pod as the API server makes it from the real cluster's Deployment ``name``, with
    the service-account volume admission adds."""
    [deployment] = [
        d
        for d in yaml.safe_load_all(MANIFEST.read_text())
        if d["kind"] == "Deployment" and d["metadata"]["name"] == name
    ]
    template = copy.deepcopy(deployment["spec"]["template"])
    template["spec"]["volumes"] = [
        {
            "name": "kube-api-access-x",
            "projected": {
                "sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {
                        "configMap": {
                            "name": "kube-root-ca.crt",
                            "items": [{"key": "ca.crt", "path": "ca.crt"}],
                        }
                    },
                    {
                        "downwardAPI": {
                            "items": [
                                {
                                    "path": "namespace",
                                    "fieldRef": {"fieldPath": "metadata.namespace"},
                                }
                            ]
                        }
                    },
                ]
            },
        }
    ]
    for container in template["spec"]["containers"]:
        container["volumeMounts"] = [
            {
                "name": "kube-api-access-x",
                "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                "readOnly": True,
            }
        ]
    return {
        "metadata": {"name": f"{name}-abc", "namespace": "wasm-operators", "uid": "u-1"},
        "spec": {**template["spec"], "nodeName": "wasmop-system"},
    }


def test_the_operator_deployment_runs_as_planned() -> None:
    plan = plan_process(deployment_pod("wasmop-operator"))
    assert plan.args[:2] == ("operator", "run")
    assert (plan.uid, plan.gid, plan.no_new_privileges) == (65532, 65532, True)
    assert plan.limits == CgroupLimits(
        cpu_limit_millis=500, cpu_request_millis=100, memory_limit_bytes=256 * 2**20
    )
    assert plan.ports == {"metrics": 8080, "health": 8081}
    assert plan.liveness is not None and plan.liveness.port == 8081
    assert plan.readiness is not None and plan.readiness.path == "/readyz"
    assert EnvVar("POD_NAME", field_path="metadata.name") in plan.env
    assert plan.env_from == (EnvFrom("wasmop-operator-settings", optional=True),)
    assert plan.service_account == "wasmop-operator"
    [mount] = plan.mounts
    assert (mount.path, mount.kind) == (
        "/var/run/secrets/kubernetes.io/serviceaccount",
        "projected",
    )
    gateway = plan_process(deployment_pod("wasmop-gateway"))
    assert gateway.args == ("gateway", "run", "--host=0.0.0.0", "--port=8000")


@pytest.mark.parametrize(
    ("image", "fragment"),
    [
        ("nginx:1.27", "not allowed"),
        ("wasmop/runtime:0.1.0", "not allowed"),
        ("wasmop/operator:9.9.9", "not 9.9.9"),
        ("wasmop/operator@sha256:" + "0" * 64, "not digest"),
    ],
)
def test_only_the_projects_own_images_of_this_version_run(image: str, fragment: str) -> None:
    with pytest.raises(PodSpecError) as refused:
        check_image(image)
    assert refused.value.reason == "ErrImageNeverPull"
    assert fragment in refused.value.message
    check_image(f"wasmop/operator:{__version__}")
    check_image(f"docker.io/wasmop/operator:{__version__}")
    check_image("wasmop/operator")


def refusal(mutate: Any) -> PodSpecError:
    pod = deployment_pod("wasmop-operator")
    mutate(pod, pod["spec"]["containers"][0])
    with pytest.raises(PodSpecError) as refused:
        plan_process(pod)
    return refused.value


def test_what_a_host_process_cannot_be_is_refused_with_a_reason() -> None:
    def root(pod: dict[str, Any], container: dict[str, Any]) -> None:
        container["securityContext"] = {"runAsUser": 0, "runAsNonRoot": True}

    assert refusal(root).message == "container has runAsNonRoot and image will run as root"
    assert refusal(root).reason == "CreateContainerConfigError"

    def command(pod: dict[str, Any], container: dict[str, Any]) -> None:
        container["command"] = ["/bin/sh", "-c", "id"]

    assert "entrypoint" in refusal(command).message

    def secret(pod: dict[str, Any], container: dict[str, Any]) -> None:
        container["env"].append(
            {"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
        )

    assert "secretKeyRef is not supported" in refusal(secret).message

    def host_path(pod: dict[str, Any], container: dict[str, Any]) -> None:
        pod["spec"]["volumes"].append({"name": "h", "hostPath": {"path": "/"}})
        container["volumeMounts"].append({"name": "h", "mountPath": "/host"})

    assert "hostPath volumes are not supported" in refusal(host_path).message

    def privileged(pod: dict[str, Any], container: dict[str, Any]) -> None:
        container["securityContext"]["privileged"] = True

    assert "privileged" in refusal(privileged).message

    def two(pod: dict[str, Any], container: dict[str, Any]) -> None:
        pod["spec"]["containers"].append(dict(container, name="second"))

    assert refusal(two).reason == "UnsupportedPod"


def test_field_references_read_the_pod() -> None:
    pod = deployment_pod("wasmop-operator")
    assert field_value(pod, "metadata.name", "10.0.0.1", "10.0.0.2") == "wasmop-operator-abc"
    assert field_value(pod, "status.podIP", "10.0.0.1", "10.0.0.2") == "10.0.0.1"
    assert field_value(pod, "spec.nodeName", "", "") == "wasmop-system"


def test_limits_become_cgroup_settings_as_the_kubelet_maps_them() -> None:
    assert cpu_quota_us(500) == 50_000  # 500m: half of each 100 ms period
    assert cpu_quota_us(1) == 1000  # never below 1 ms
    assert cpu_shares(100) == 102
    assert cpu_shares(None) == 2
    proc = "12:cpu,cpuacct:/a\n4:memory:/process_api/x\n0::/\n"
    assert own_group("memory", proc) == "/process_api/x"
    assert own_group("cpuacct", proc) == "/a"


def test_in_cluster_credentials_are_found_in_a_host_process_sandbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "var/run/secrets/kubernetes.io/serviceaccount"
    directory.mkdir(parents=True)
    (directory / "token").write_text("t\n")
    (directory / "namespace").write_text("wasm-operators")
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    monkeypatch.setenv("CONTAINER_SANDBOX_MOUNT_POINT", str(tmp_path))
    config = KubeConfig.load()
    assert config.server == "https://127.0.0.1:6443"
    assert config.ca_file == str(directory / "ca.crt")
    assert (config.namespace, config.bearer_token()) == ("wasm-operators", "t")
