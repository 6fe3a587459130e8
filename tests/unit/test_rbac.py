"""The RBAC manifests grant exactly what the code calls: nothing missing (the call would
fail with 403 on a real cluster), nothing extra (least privilege).

The code side is read statically (``api_calls``): the operator's own API calls plus what
kopf does for its handlers; the manifest side is every rule of the roles, expanded into
single verbs. A difference either way fails and names the verbs. Three kinds of access the
reading cannot place by itself are named here, each with its reason: the kubelet API the
autoscaler reads (authorized as ``get nodes/metrics``), the resync's listings of every
namespace at once (its namespace argument is None), and the pull Secrets a function names
(granted per Secret by the namespace's owner, never by these roles).
"""

from __future__ import annotations

import pkgutil
from collections.abc import Iterable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import wasmop.gateway
import wasmop.operator
import yaml
from api_calls import Access, api_accesses, kopf_needs
from wasmop.operator.app import OperatorSettings, build_registry
from wasmop.operator.install import function_namespace_binding, manifests, manifests_dir
from wasmop.wellknown import GROUP

# Run by an administrator (`wasmop operator install`, the command line), not the operator.
NOT_THE_OPERATOR = {"wasmop.operator.install", "wasmop.operator.cli"}
OPERATOR_MODULES = [
    *(
        f"wasmop.operator.{m.name}"
        for m in pkgutil.iter_modules(wasmop.operator.__path__)
        if f"wasmop.operator.{m.name}" not in NOT_THE_OPERATOR
    ),
    "wasmop.kube.events",
]
GATEWAY_MODULES = [
    *(f"wasmop.gateway.{m.name}" for m in pkgutil.iter_modules(wasmop.gateway.__path__)),
    "wasmop.supervision",
]
# kopf, beyond its handlers: it watches CRDs for new kinds and peers through
# ClusterKopfPeerings; watching only some namespaces, it also lists and watches Namespaces.
KOPF_ALWAYS = {
    Access("apiextensions.k8s.io", "customresourcedefinitions", v, False) for v in ("list", "watch")
} | {Access("kopf.dev", "clusterkopfpeerings", v, False) for v in ("list", "watch", "patch")}
KOPF_NAMESPACED = {Access("", "namespaces", v, False) for v in ("list", "watch")}
CLUSTER_SCOPED = {"nodes", "namespaces", "customresourcedefinitions", "clusterkopfpeerings"}
# The autoscaler reads /metrics/resource from each node's kubelet API over HTTPS, which
# the kubelet authorizes with a SubjectAccessReview for this (operator/scaling.py).
KUBELET_API = {Access("", "nodes/metrics", "get", False)}
# The resync lists the Deployments and Services it manages in all namespaces at once
# (api_path(..., namespace) with namespace None when the operator watches all of them).
RESYNC_ALL_NAMESPACES = {
    Access("apps", "deployments", "list", False),
    Access("", "services", "list", False),
}
# images.py reads the Secrets a function names in spec.module.imagePullSecrets, one get
# each: the namespace's owner grants that per Secret (a Role with resourceNames), so no
# role here grants Secrets at all.
PER_SECRET_GRANT = ("", "secrets", "get")

Grant = tuple[str, str, str]  # group, resource, verb


def grants(accesses: Iterable[Access]) -> set[Grant]:
    return {(a.group, a.resource, a.verb) for a in accesses}


def rules_of(path: str, kind: str, name: str) -> set[Grant]:
    docs = yaml.safe_load_all((manifests_dir() / path).read_text())
    [role] = [d for d in docs if d and d["kind"] == kind and d["metadata"]["name"] == name]
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def cluster_scoped(resource: str) -> bool:
    """Core and kopf kinds by the API's own scopes; ours by the CRDs."""
    plural = resource.split("/", 1)[0]
    if plural in CLUSTER_SCOPED:
        return True
    for crd in ("wasmruntimes", "wasmfunctions"):
        doc = yaml.safe_load((manifests_dir() / f"crds/{crd}.yaml").read_text())
        if doc["spec"]["names"]["plural"] == plural:
            return doc["spec"]["scope"] == "Cluster"
    return False


def describe(grant_set: set[Grant]) -> str:
    return ", ".join(
        f"{verb} {group or 'core'}/{resource}" for group, resource, verb in sorted(grant_set)
    )


def assert_same(code: set[Grant], manifest: set[Grant], role: str) -> None:
    missing, extra = code - manifest, manifest - code
    assert not missing and not extra, (
        f"{role}: the code needs but the manifest lacks: [{describe(missing)}]; "
        f"the manifest grants but no code calls: [{describe(extra)}]"
    )


@pytest.fixture(scope="module")
def operator_calls() -> set[Access]:
    return api_accesses(OPERATOR_MODULES)


@pytest.fixture(scope="module")
def kopf_calls() -> set[Access]:
    registry: Any = build_registry(SimpleNamespace(settings=OperatorSettings()))  # type: ignore[arg-type]
    return kopf_needs(registry)


def test_the_reading_sees_the_calls_it_must(operator_calls: set[Access]) -> None:
    """The static reading is not vacuous: known calls through helpers are found."""
    seen = grants(operator_calls)
    assert ("apps", "deployments", "patch") in seen  # _apply_owned(path, ...)
    assert ("", "configmaps", "delete") in seen  # _delete_configmap builds its path
    assert (GROUP, "wasmfunctions/status", "patch") in seen  # state.write_status
    assert ("", "events", "create") in seen  # kube.events
    assert (GROUP, "wasmfunctions/scale", "patch") in seen  # the autoscaler
    assert PER_SECRET_GRANT in seen  # images.py, a function's pull Secrets
    gateway = grants(api_accesses(GATEWAY_MODULES))
    assert ("", "services", "watch") in gateway  # TaskSupervisor.start_watch(..., path)
    assert (GROUP, "wasmfunctions/scale", "patch") in gateway  # activation from zero
    assert ("apps", "deployments/scale", "patch") in gateway  # ... and its Deployment's
    scaling = (Path(wasmop.operator.__file__).parent / "scaling.py").read_text()
    assert "/metrics/resource" in scaling  # what KUBELET_API stands for


def without_pull_secrets(accesses: set[Access]) -> set[Access]:
    return {a for a in accesses if (a.group, a.resource, a.verb) != PER_SECRET_GRANT}


def test_no_role_grants_secrets() -> None:
    """Pull Secrets are granted one by one where they live; the operator's, gateway's and
    tenants' roles hold no Secret at all."""
    for path in ("rbac/operator.yaml", "rbac-namespaced/operator.yaml", "rbac/gateway.yaml",
                 "rbac/tenant.yaml"):  # fmt: skip
        for doc in yaml.safe_load_all((manifests_dir() / path).read_text()):
            for rule in (doc or {}).get("rules", []):
                assert "secrets" not in rule["resources"], (path, rule)
                assert "*" not in rule["resources"] and "*" not in rule["verbs"], (path, rule)


def test_cluster_wide_operator_rbac_matches_the_code(
    operator_calls: set[Access], kopf_calls: set[Access]
) -> None:
    """wasmop:operator (bound cluster-wide): kopf's needs, the operator's own API, and
    calls that name no namespace. wasmop:operator-functions (bound per function
    namespace): everything else, i.e. what it writes in a function's namespace."""
    calls = without_pull_secrets(operator_calls)
    own_api = {a for a in calls if not a.namespaced or a.group == GROUP}
    in_function_namespaces = grants(calls - own_api) - grants(RESYNC_ALL_NAMESPACES)
    assert_same(
        grants(kopf_calls | KOPF_ALWAYS | own_api | KUBELET_API | RESYNC_ALL_NAMESPACES),
        rules_of("rbac/operator.yaml", "ClusterRole", "wasmop:operator"),
        "ClusterRole wasmop:operator",
    )
    assert_same(
        in_function_namespaces,
        rules_of("rbac/operator.yaml", "ClusterRole", "wasmop:operator-functions"),
        "ClusterRole wasmop:operator-functions",
    )


def test_namespaced_operator_rbac_matches_the_code(
    operator_calls: set[Access], kopf_calls: set[Access]
) -> None:
    """With --namespace, namespaced kinds are a Role per watched namespace; only
    cluster-scoped kinds stay in a ClusterRole."""
    needs = grants(without_pull_secrets(operator_calls) | kopf_calls | KUBELET_API)
    cluster = {g for g in needs if cluster_scoped(g[1])}
    assert_same(
        cluster | grants(KOPF_ALWAYS | KOPF_NAMESPACED),
        rules_of("rbac-namespaced/operator.yaml", "ClusterRole", "wasmop:operator-cluster"),
        "ClusterRole wasmop:operator-cluster",
    )
    assert_same(
        needs - cluster,
        rules_of("rbac-namespaced/operator.yaml", "Role", "wasmop:operator"),
        "Role wasmop:operator",
    )


def test_gateway_rbac_matches_the_code() -> None:
    assert_same(
        grants(api_accesses(GATEWAY_MODULES)),
        rules_of("rbac/gateway.yaml", "ClusterRole", "wasmop:gateway"),
        "ClusterRole wasmop:gateway",
    )


def test_the_function_role_is_never_bound_cluster_wide() -> None:
    """Bound cluster-wide it would reopen kube-system's ConfigMaps and Deployments."""
    docs = [
        d for d in yaml.safe_load_all((manifests_dir() / "rbac/operator.yaml").read_text()) if d
    ]
    bound = {(d["kind"], d["roleRef"]["name"]) for d in docs if d["kind"].endswith("Binding")}
    assert ("ClusterRoleBinding", "wasmop:operator-functions") not in bound
    assert ("RoleBinding", "wasmop:operator-functions") in bound


def test_install_binds_the_operator_where_it_is_told() -> None:
    """--function-namespace: one RoleBinding to the function role per namespace;
    --namespace: the namespaced variant, a Role and RoleBinding per watched namespace."""

    def placed(found: list[Any], kind: str) -> set[tuple[str, str]]:
        return {
            (o["metadata"]["namespace"], o["metadata"]["name"])
            for m in found
            for o in m.objects
            if o["kind"] == kind
        }

    default = manifests()
    assert placed(default, "RoleBinding") == {("default", "wasmop:operator")}
    assert placed(default, "Role") == set()
    tenants = manifests(function_namespaces=["team-a", "team-b"])
    assert placed(tenants, "RoleBinding") == {
        ("team-a", "wasmop:operator"),
        ("team-b", "wasmop:operator"),
    }
    binding = function_namespace_binding("team-c")
    assert binding["roleRef"]["name"] == "wasmop:operator-functions"
    assert binding["metadata"]["namespace"] == "team-c"
    watched = manifests(watch_namespaces=["team-a"])
    assert placed(watched, "Role") == {("team-a", "wasmop:operator")}
    assert placed(watched, "RoleBinding") == {("team-a", "wasmop:operator")}
    kinds = {(o["kind"], o["metadata"]["name"]) for m in watched for o in m.objects}
    assert ("ClusterRoleBinding", "wasmop:operator") not in kinds
    assert ("ClusterRoleBinding", "wasmop:operator-cluster") in kinds
