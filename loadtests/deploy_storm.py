"""A deployment storm: users create WasmFunctions through the Kubernetes API and report
create-to-Ready as a Locust request named ``deploy``.

    locust -f loadtests/deploy_storm.py --headless -u 20 -r 20 --run-time 120s \
        --namespace storm --workload hello --storm-functions 100

So deployment success and latency land in Locust's own statistics (and the raw log)
beside the HTTP scenarios. Each user creates one function at a time, named
``storm-<n>``; one shared watch per process sees every function's status and wakes the
user whose function turned Ready (``status.phase == Ready`` with all replicas). The run
ends after ``--storm-functions`` functions (and ``--run-time`` bounds it regardless).
The namespace and the module ConfigMap ``wasm-<workload>`` must exist
(:func:`wasmop.bench.deploy.ensure_module`).
"""

from __future__ import annotations

import itertools
import logging
import time
from typing import Any

import _common
import gevent
from gevent.event import AsyncResult
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from locust import User, constant, events, task
from locust.env import Environment
from locust.exception import StopUser
from wasmop.bench.net import check_target
from wasmop.bench.watch import function_ready
from wasmop.wellknown import API_VERSION, DOMAIN, FUNCTION_KIND, GROUP, VERSION
from wasmop.wellknown import FUNCTION_PLURAL as PLURAL

log = logging.getLogger("wasmop.loadtests.storm")


_shared: dict[str, Any] = {
    "api": None,
    "watcher": None,
    "waiters": {},
    "counter": itertools.count(),
    "done": 0,
}


def _api(environment: Environment) -> client.ApiClient:
    if _shared["api"] is None:
        from wasmop.cluster.layout import active_kubeconfig

        path = environment.parsed_options.kubeconfig or str(active_kubeconfig())
        api = config.new_client_from_config(config_file=path)
        check_target(api.configuration.host)  # the API server, too, must be on loopback
        _shared["api"] = api
    return _shared["api"]


def _watch_functions(environment: Environment, namespace: str) -> None:
    """Resolve each waiter the moment its function's status turns Ready."""
    custom = client.CustomObjectsApi(_api(environment))
    version = None
    while True:
        try:
            if version is None:
                listing = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
                version = listing["metadata"]["resourceVersion"]
                for obj in listing.get("items", []):
                    _resolve(obj)
            stream = watch.Watch().stream(
                custom.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL,
                resource_version=version, timeout_seconds=60, allow_watch_bookmarks=True,
            )  # fmt: skip
            for event in stream:
                obj = event["object"]
                version = obj.get("metadata", {}).get("resourceVersion", version)
                if event["type"] in ("ADDED", "MODIFIED"):
                    _resolve(obj)
        except ApiException as exc:
            if exc.status == 410:
                version = None  # too old: relist
            else:
                log.warning("watch of WasmFunctions failed: %s; retrying", exc.reason)
                gevent.sleep(0.5)
        except Exception as exc:  # a broken connection: resume from `version`
            log.info("watch of WasmFunctions interrupted: %s", exc)
            gevent.sleep(0.2)


def _resolve(obj: dict[str, Any]) -> None:
    name = obj["metadata"]["name"]
    waiter: AsyncResult | None = _shared["waiters"].get(name)
    if waiter is not None and not waiter.ready() and function_ready(obj):
        waiter.set(time.time())


@events.test_start.add_listener
def _start_watch(environment: Environment, **_: Any) -> None:
    options = environment.parsed_options
    if not options or not options.namespace:
        return
    if _shared["watcher"] is None:
        _shared["watcher"] = gevent.spawn(_watch_functions, environment, options.namespace)


@events.quitting.add_listener
def _stop_watch(**_: Any) -> None:
    if _shared["watcher"] is not None:
        _shared["watcher"].kill(block=False)


class DeployStormUser(User):
    """Creates WasmFunctions one after the other and times each to Ready."""

    wait_time = constant(0)

    @task
    def deploy(self) -> None:
        options = self.environment.parsed_options
        if not options.namespace:
            raise StopUser("--namespace is required")
        index = next(_shared["counter"])
        if index >= options.storm_functions:
            raise StopUser()
        name = f"storm-{index}"
        body = {
            "apiVersion": API_VERSION,
            "kind": FUNCTION_KIND,
            "metadata": {"name": name, "labels": {f"{DOMAIN}/storm": "true"}},
            "spec": {
                "module": {"configMapRef": {"name": f"wasm-{options.workload}"}},
                "version": "1.0.0",
                "replicas": 1,
            },
        }
        custom = client.CustomObjectsApi(_api(self.environment))
        waiter = AsyncResult()
        _shared["waiters"][name] = waiter
        started = time.time()
        exception: Exception | None = None
        try:
            custom.create_namespaced_custom_object(GROUP, VERSION, options.namespace, PLURAL, body)
            ready_at = waiter.get(timeout=options.storm_timeout)
            elapsed_ms = (ready_at - started) * 1000
        except gevent.Timeout:
            elapsed_ms = (time.time() - started) * 1000
            exception = TimeoutError(f"{name} not Ready after {options.storm_timeout:g} s")
        except ApiException as exc:
            elapsed_ms = (time.time() - started) * 1000
            exception = RuntimeError(f"create {name}: {exc.status} {exc.reason}")
        finally:
            _shared["waiters"].pop(name, None)
        self.environment.events.request.fire(
            request_type="K8S",
            name="deploy",
            response_time=elapsed_ms,
            response_length=0,
            response=None,
            context={"function": name},
            exception=exception,
            start_time=started,
        )
        if options.storm_delete and exception is None:
            try:
                custom.delete_namespaced_custom_object(
                    GROUP, VERSION, options.namespace, PLURAL, name
                )
            except ApiException as exc:
                log.warning("delete %s: %s", name, exc.reason)
        _shared["done"] += 1
        if _shared["done"] >= options.storm_functions:
            _common.stop_run(f"all {options.storm_functions} functions deployed")
