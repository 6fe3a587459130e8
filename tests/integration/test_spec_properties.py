"""Generated WasmFunction and WasmRuntime specs through the real API server (server-side
dry run: the CRD schema, defaults and CEL rules all run) and through the operator's own
checks, and what the operator would make of them through the API server again.

Properties, for every generated pair of a runtime and a function:

* nothing crashes: the operator's parser either parses or raises SpecError, on any input;
* every refusal carries a reason: the API server's a 422 with a message and causes, the
  operator's a Problem with a CamelCase reason, a message and the field;
* the operator parses whatever the API server admits (schema and parser agree);
* the CEL rules on placement and the operator's label checks agree;
* a spec both accept yields a module ConfigMap (unless the module is an image), a
  Deployment, a Service (and an HPA) that the API server accepts from the operator's own
  identity, the way the operator writes them (its client, dry run).

Seeded (``WASMOP_SPEC_SEED``, default below) and sized (``WASMOP_SPEC_EXAMPLES``, at
least 1,000 in ``make test``): a failure prints its seed and the command that replays it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import time
from collections import Counter
from functools import cache
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, example, given, note, seed, settings
from hypothesis import strategies as st
from kubernetes import client
from kubernetes.client.rest import ApiException
from spec_strategies import function_specs, owned_objects, runtime_specs
from wasmop.cluster.layout import repo_root
from wasmop.kube import ApiError, Kube, KubeConfig
from wasmop.kube.client import api_path
from wasmop.oci import ImageReference, ReferenceError
from wasmop.operator.function_controller import FIELD_MANAGER
from wasmop.operator.modules import compile_check
from wasmop.operator.spec import SpecError, WasmFunction, WasmRuntime
from wasmop.operator.validation import (
    Problem,
    Reason,
    problem_from_spec_error,
    validate_function,
    validate_runtime,
)
from wasmop.wellknown import (
    API_VERSION,
    FUNCTION_KIND,
    FUNCTION_PLURAL,
    GROUP,
    RUNTIME_KIND,
    RUNTIME_PLURAL,
    VERSION,
)

pytestmark = pytest.mark.integration

SEED = int(os.environ.get("WASMOP_SPEC_SEED", "20261130"))
EXAMPLES = int(os.environ.get("WASMOP_SPEC_EXAMPLES", "1000"))
HELLO = (repo_root() / "functions" / "build" / "hello.wasm").read_bytes()
HELLO_SHA256 = hashlib.sha256(HELLO).hexdigest()
RUNTIMES = ["default", "generated", "missing"]
CAMEL = re.compile(r"^[A-Z][A-Za-z0-9]+$")
# The operator's placement reasons, where it has them: CEL must refuse those first.
PLACEMENT_SYNTAX = {
    getattr(Reason, name).value
    for name in ("INVALID_PLACEMENT", "PLACEMENT_NOT_ALLOWED")
    if hasattr(Reason, name)
}
REPLAY = (
    "WASMOP_SPEC_SEED={seed} WASMOP_SPEC_EXAMPLES={examples} wasmop-cluster-lock "
    ".venv/bin/python -m pytest tests/integration/test_spec_properties.py"
)
OWNED_PLURALS = {
    "ConfigMap": "configmaps",
    "Deployment": "deployments",
    "Service": "services",
    "HorizontalPodAutoscaler": "horizontalpodautoscalers",
}
URL_MODULE = {"url": "https://modules.example.com/hello.wasm"}


@cache
def module_verdict(features: tuple[str, ...]) -> tuple[str, str] | None:
    """hello.wasm judged under these engine features, once per feature set."""
    return compile_check(HELLO, features)


def rejection(exc: ApiException) -> str:
    """The API server's refusal must say why: 422 Invalid with a message and causes."""
    body = json.loads(exc.body)
    assert exc.status == 422, (exc.status, body)
    assert body.get("reason") == "Invalid" and body.get("message"), body
    causes = (body.get("details") or {}).get("causes") or []
    assert causes and all(c.get("message") for c in causes), body
    return body["message"]


def check_problems(problems: list[Problem]) -> None:
    for problem in problems:
        assert CAMEL.match(problem.reason), problem
        assert problem.message.strip(), problem
        assert problem.field.startswith(("spec", "metadata")), problem


def parse_or_problem(parse: Any, body: dict[str, Any]) -> tuple[Any, list[Problem]]:
    """The operator's parser on any body: a value, or a SpecError as a Problem."""
    try:
        return parse(body), []
    except SpecError as exc:
        return None, [problem_from_spec_error(exc)]


def custom_object(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": name}, "spec": spec}


class Cluster:
    """Dry runs against the embedded API server: as admin, and as the operator."""

    def __init__(self, admin: client.ApiClient, operator: KubeConfig, namespace: str):
        self.custom = client.CustomObjectsApi(admin)
        self.namespace = namespace
        self.operator_config = operator
        self.default_runtime = self.custom.get_cluster_custom_object(
            GROUP, VERSION, RUNTIME_PLURAL, "default"
        )

    def admit_runtime(self, spec: dict[str, Any]) -> dict[str, Any]:
        body = custom_object(RUNTIME_KIND, "generated", spec)
        return self.custom.create_cluster_custom_object(
            GROUP, VERSION, RUNTIME_PLURAL, body, dry_run="All"
        )

    def admit_function(self, spec: dict[str, Any]) -> dict[str, Any]:
        body = custom_object(FUNCTION_KIND, "prop", spec)
        return self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, FUNCTION_PLURAL, body, dry_run="All"
        )

    def write_owned(self, objects: list[dict[str, Any]]) -> None:
        """Each object as the operator writes it, through its own client and identity:
        create the ConfigMap, apply the rest."""
        asyncio.run(self._write_owned(objects))

    async def _write_owned(self, objects: list[dict[str, Any]]) -> None:
        async with Kube(self.operator_config) as kube:
            for obj in objects:
                meta = obj["metadata"]
                plural = OWNED_PLURALS[obj["kind"]]
                if obj["kind"] == "ConfigMap":
                    path = api_path(obj["apiVersion"], plural, meta["namespace"])
                    await kube.create(path, obj, dryRun="All")
                else:
                    path = api_path(obj["apiVersion"], plural, meta["namespace"], meta["name"])
                    await kube.apply(path, obj, FIELD_MANAGER, dryRun="All")


def operator_verdict(
    function_obj: dict[str, Any], runtime_obj: dict[str, Any] | None
) -> tuple[WasmFunction, WasmRuntime | None, list[Problem]]:
    """What the operator's reconcile judges before writing anything (module: hello)."""
    function = WasmFunction.from_body(function_obj)
    runtime = None if runtime_obj is None else WasmRuntime.from_body(runtime_obj)
    problems = [] if runtime is None else validate_runtime(runtime)
    source = function.spec.module
    if source.image is not None:
        try:
            ImageReference.parse(source.image)
        except ReferenceError as exc:  # images.py: InvalidImage, permanent
            problems.append(Problem("spec.module.image", "InvalidImage", str(exc)))
    problems += validate_function(function, runtime, module=HELLO)
    if runtime is not None and not problems:
        failure = module_verdict(runtime.spec.features.enabled())
        if failure is not None:
            problems.append(Problem("spec.module", Reason.MODULE_INCOMPATIBLE, failure[1]))
    return function, runtime, problems


@pytest.fixture
def dry_runs(api: client.ApiClient, namespace: str, cluster) -> Cluster:  # type: ignore[no-untyped-def]
    operator = KubeConfig.from_file(cluster.layout.kubeconfig_for("operator"))
    return Cluster(api, operator, namespace)


def test_generated_specs_through_the_api_server_and_the_operator(dry_runs: Cluster) -> None:
    outcomes: Counter[str] = Counter()
    started = time.monotonic()
    hello_b64 = base64.b64encode(HELLO).decode()
    functions = function_specs(RUNTIMES, HELLO_SHA256, hello_b64)

    @seed(SEED)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=(Phase.explicit, Phase.generate, Phase.shrink),
        suppress_health_check=list(HealthCheck),
    )
    @given(runtime_spec=st.one_of(st.none(), runtime_specs()), function_spec=functions)
    # What earlier runs found, replayed every run: a negative quantity both admitted and
    # the operator accepted, but no Deployment may carry (seed 7).
    @example(None, {"module": URL_MODULE, "resources": {"requests": {"cpu": "-1"}}})
    @example(None, {"module": URL_MODULE, "resources": {"limits": {"memory": -64}}})
    @example(None, {"module": URL_MODULE, "rollout": {"maxSurge": -1}})
    @example({"maximums": {"resources": {"cpu": ""}}}, {"module": URL_MODULE})
    @example({"maximums": {"limits": {"memory": "-1Mi"}}}, {"module": URL_MODULE})
    # A progress deadline not beyond minReadySeconds (seeds 7, 11 and 13 of 3,000).
    @example(
        None,
        {"module": URL_MODULE, "rollout": {"minReadySeconds": 5, "progressDeadlineSeconds": 5}},
    )
    # An image with whitespace: every function's Deployment on that runtime refused.
    @example(
        {"engine": {"image": " wasmop/runtime"}},
        {"module": URL_MODULE, "runtimeRef": {"name": "generated"}},
    )
    # A character outside the Basic Multilingual Plane in an env value: the client sent it
    # as a JSON surrogate pair, which the server's YAML decoder of an apply refuses (seed
    # 20261130 in make test).
    @example(
        None,
        {"module": URL_MODULE, "capabilities": {"env": [{"name": "A", "value": "\U00010000"}]}},
    )
    # DEL in an env value: admitted by the CRD and the operator, then every apply refused
    # with 400 "control characters are not allowed" (the YAML decoder; make test).
    @example(
        None,
        {"module": URL_MODULE, "capabilities": {"env": [{"name": "A", "value": "\x7f\x85\u2028"}]}},
    )
    def check(runtime_spec: dict[str, Any] | None, function_spec: dict[str, Any]) -> None:
        note(f"reproduce with: {REPLAY.format(seed=SEED, examples=EXAMPLES)}")
        outcomes["examples"] += 1
        # Any input: the operator's parsers parse or refuse, never crash.
        check_problems(parse_or_problem(WasmFunction.from_body, {"spec": function_spec})[1])
        if runtime_spec is not None:
            check_problems(parse_or_problem(WasmRuntime.from_body, {"spec": runtime_spec})[1])

        runtime_obj: dict[str, Any] | None = dry_runs.default_runtime
        if runtime_spec is not None:
            try:
                runtime_obj = dry_runs.admit_runtime(runtime_spec)
                outcomes["runtime admitted"] += 1
            except ApiException as exc:
                rejection(exc)
                outcomes["runtime refused by the API server"] += 1
                return
        try:
            function_obj = dry_runs.admit_function(function_spec)
        except ApiException as exc:
            rejection(exc)
            outcomes["function refused by the API server"] += 1
            return
        outcomes["function admitted"] += 1
        ref = function_obj["spec"]["runtimeRef"]["name"]
        chosen = {"default": dry_runs.default_runtime, "generated": runtime_spec and runtime_obj}
        function, runtime, problems = operator_verdict(function_obj, chosen.get(ref) or None)
        check_problems(problems)
        placement = [p for p in problems if p.reason in PLACEMENT_SYNTAX]
        assert not placement, f"CEL admitted what the operator refuses: {placement}"
        if problems:
            outcomes[f"operator: {problems[0].reason}"] += 1
            return
        assert runtime is not None
        try:
            dry_runs.write_owned(owned_objects(function, runtime, HELLO))
        except ApiError as exc:
            pytest.fail(f"the API server refuses what the operator would write: {exc}")
        outcomes["both accept; owned objects accepted"] += 1

    try:
        check()
    except BaseException:
        print(f"\nspec properties failed; replay: {REPLAY.format(seed=SEED, examples=EXAMPLES)}")  # noqa: T201
        raise
    summary = ", ".join(f"{k}: {v}" for k, v in sorted(outcomes.items()))
    print(f"\nspec properties (seed {SEED}, {time.monotonic() - started:.0f} s): {summary}")  # noqa: T201
    assert outcomes["examples"] >= EXAMPLES
    # Each property was exercised, not just the refusals.
    assert outcomes["both accept; owned objects accepted"] >= EXAMPLES // 20
    assert outcomes["function refused by the API server"] >= EXAMPLES // 20
    assert sum(v for k, v in outcomes.items() if k.startswith("operator:")) >= EXAMPLES // 100
