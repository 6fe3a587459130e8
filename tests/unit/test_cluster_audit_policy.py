"""The audit policy, evaluated as the API server does: the first matching rule decides."""

from __future__ import annotations

import fnmatch
from typing import Any

import pytest
from wasmop.cluster.components import AUDIT_POLICY, OPERATOR_USER


def level(verb: str, group: str = "", resource: str = "", url: str = "", user: str = "") -> str:
    """The level of the first rule that matches a request (audit.k8s.io/v1 semantics for
    the fields this policy uses: verbs, resources by group, nonResourceURLs)."""
    for rule in AUDIT_POLICY["rules"]:
        if "verbs" in rule and verb not in rule["verbs"]:
            continue
        if "users" in rule and user not in rule["users"]:
            continue
        if "resources" in rule and not (resource and _resource_matches(rule, group, resource)):
            continue
        if "nonResourceURLs" in rule and not (
            url and any(fnmatch.fnmatch(url, p) for p in rule["nonResourceURLs"])
        ):
            continue
        return str(rule["level"])
    return "None"


def _resource_matches(rule: dict[str, Any], group: str, resource: str) -> bool:
    return any(
        g.get("group", "") == group and resource in g.get("resources", [resource])
        for g in rule["resources"]
    )


@pytest.mark.parametrize("verb", ["get", "list", "watch"])
def test_secret_reads_are_audited_at_metadata(verb: str) -> None:
    assert level(verb, "", "secrets") == "Metadata"


@pytest.mark.parametrize("verb", ["create", "update", "patch", "delete"])
def test_secret_writes_never_log_their_body(verb: str) -> None:
    assert level(verb, "", "secrets") == "Metadata"


def test_issued_and_reviewed_tokens_never_log_their_body() -> None:
    assert level("create", "", "serviceaccounts/token") == "Metadata"
    assert level("create", "authentication.k8s.io", "tokenreviews") == "Metadata"


def test_other_reads_and_churn_stay_out_and_writes_keep_their_body() -> None:
    assert level("get", "", "configmaps") == "None"
    assert level("watch", "apps", "deployments") == "None"
    assert level("update", "coordination.k8s.io", "leases") == "None"
    assert level("get", url="/readyz") == "None"
    assert level("create", "", "configmaps") == "Request"
    assert level("patch", "apps", "deployments") == "Request"


@pytest.mark.parametrize("group", ["", "events.k8s.io"])
def test_event_writes_are_counted_without_their_text(group: str) -> None:
    for verb in ("create", "patch", "update"):
        assert level(verb, group, "events") == "Metadata"
    assert level("delete", group, "events") == "None"
    assert level("watch", group, "events") == "None"


def test_the_operators_reads_are_counted_without_bodies() -> None:
    from wasmop.cluster import bootstrap

    assert (
        f"system:serviceaccount:{bootstrap.OPERATOR_NAMESPACE}:{bootstrap.OPERATOR_ACCOUNT}"
    ) == OPERATOR_USER
    for verb in ("get", "list", "watch"):
        assert level(verb, "apps", "deployments", user=OPERATOR_USER) == "Metadata"
        assert level(verb, "apps", "deployments", user="someone") == "None"
    assert level("get", "", "secrets", user=OPERATOR_USER) == "Metadata"
