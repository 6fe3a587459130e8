"""What every wasmop Locust scenario shares: its command-line options, the raw
per-request log, the request bound and the failure-ratio exit code.

Imported by each locustfile (Python caches the module, so combining several files with
``-f a.py,b.py`` registers everything once). The leading underscore keeps Locust from
treating this file as a scenario of its own. Locust runs only as a headless subprocess
of :mod:`wasmop.bench.load`, never inside a Jupyter kernel (gevent).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import gevent
from locust import events
from locust.env import Environment
from wasmop.bench.net import TargetNotAllowed, check_target
from wasmop.bench.rawlog import RawLogWriter, header, parse_server_timing

log = logging.getLogger("wasmop.loadtests")

_state: dict[str, Any] = {"writer": None, "requests": 0, "stopping": False}


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    group = parser.add_argument_group("wasmop")
    group.add_argument(
        "--raw-log",
        default="",
        env_var="WASMOP_RAW_LOG",
        help="CSV file for every request (timestamp_ms, name, latency_ms, status, pod, ...)",
    )
    group.add_argument(
        "--fail-ratio",
        type=float,
        default=0.0,
        env_var="WASMOP_FAIL_RATIO",
        help="exit with status 1 when the failure ratio exceeds this (default 0: any failure)",
    )
    group.add_argument(
        "--max-requests",
        type=int,
        default=0,
        env_var="WASMOP_MAX_REQUESTS",
        help="stop after this many requests in total (0: only --run-time bounds the run)",
    )
    group.add_argument(
        "--functions",
        default="",
        env_var="WASMOP_FUNCTIONS",
        help="weighted function mix: ns/service[/path][?query][@weight],...",
    )
    group.add_argument(
        "--user-rps",
        type=float,
        default=10.0,
        env_var="WASMOP_USER_RPS",
        help="requests per second each HTTP user aims for (0: back to back)",
    )
    group.add_argument(
        "--pick",
        choices=("random", "rotate"),
        default="random",
        env_var="WASMOP_PICK",
        help="how a user picks each request's function: at random by weight, or in turns"
        " by weight (each function gets exactly its share of every user's rate)",
    )
    group.add_argument(
        "--shape",
        default="",
        env_var="WASMOP_SHAPE",
        help="load shape, e.g. step:peak=20,base=2,steps=4,duration=60 (shape.py)",
    )
    group.add_argument(
        "--namespace",
        default="",
        env_var="WASMOP_NAMESPACE",
        help="deployment storm: namespace to create WasmFunctions in (must exist)",
    )
    group.add_argument(
        "--workload",
        default="hello",
        env_var="WASMOP_WORKLOAD",
        help="deployment storm: workload whose module is in ConfigMap wasm-<workload>",
    )
    group.add_argument(
        "--storm-functions",
        type=int,
        default=10,
        env_var="WASMOP_STORM_FUNCTIONS",
        help="deployment storm: WasmFunctions to create in total",
    )
    group.add_argument(
        "--storm-timeout",
        type=float,
        default=120.0,
        env_var="WASMOP_STORM_TIMEOUT",
        help="deployment storm: seconds a function may take to turn Ready",
    )
    group.add_argument(
        "--storm-delete",
        action="store_true",
        env_var="WASMOP_STORM_DELETE",
        help="deployment storm: delete each function once it is Ready",
    )
    group.add_argument(
        "--kubeconfig", default="", env_var="WASMOP_KUBECONFIG",
        help="deployment storm: kubeconfig (default: $KUBECONFIG or the embedded cluster)",
    )  # fmt: skip


@events.init.add_listener
def _check_host(environment: Environment, **_: Any) -> None:
    host = environment.host or (environment.parsed_options and environment.parsed_options.host)
    if not host:
        return
    try:
        check_target(host)
    except TargetNotAllowed as exc:
        log.error("%s", exc)
        sys.exit(2)


@events.test_start.add_listener
def _open_raw_log(environment: Environment, **_: Any) -> None:
    path = environment.parsed_options.raw_log if environment.parsed_options else ""
    if path and _state["writer"] is None:
        _state["writer"] = RawLogWriter(open(path, "w", newline=""))  # noqa: SIM115


@events.request.add_listener
def _on_request(
    request_type: str,
    name: str,
    response_time: float,
    response_length: int,
    response: Any = None,
    exception: BaseException | None = None,
    start_time: float | None = None,
    **_: Any,
) -> None:
    _state["requests"] += 1
    writer: RawLogWriter | None = _state["writer"]
    if writer is not None:
        headers = getattr(response, "headers", None)
        status = getattr(response, "status_code", None) or 0
        writer.write(
            {
                "timestamp_ms": f"{(start_time or 0) * 1000:.3f}",
                "request_type": request_type,
                "name": name,
                "latency_ms": f"{response_time:.3f}",
                "status": status,
                "ok": 0 if exception else 1,
                "pod": header(headers, "X-Wasmop-Pod"),
                "cold_start": 1 if header(headers, "X-Wasmop-Cold-Start") == "true" else 0,
                "upstream_ms": parse_server_timing(header(headers, "Server-Timing")).get(
                    "upstream"
                ),
                "response_bytes": response_length,
                "error": ""
                if exception is None
                else f"{exception.__class__.__name__}: {exception}"[:200],
            }
        )
    environment = _environment()
    limit = (
        environment.parsed_options.max_requests if environment and environment.parsed_options else 0
    )
    if limit and _state["requests"] >= limit:
        stop_run(f"reached --max-requests {limit}")


_env: dict[str, Environment] = {}


@events.init.add_listener
def _remember(environment: Environment, **_: Any) -> None:
    _env["environment"] = environment


def _environment() -> Environment | None:
    return _env.get("environment")


def stopping() -> bool:
    """Whether the run is ending (a limit was reached): a user then starts no request."""
    return bool(_state["stopping"])


def stop_run(reason: str) -> None:
    """End the whole run from inside a user (e.g. the storm has created every function)."""
    environment = _environment()
    if environment is not None and environment.runner is not None and not _state["stopping"]:
        _state["stopping"] = True
        log.info("%s; stopping", reason)
        gevent.spawn(environment.runner.quit)


@events.quitting.add_listener
def _exit_code(environment: Environment, **_: Any) -> None:
    writer: RawLogWriter | None = _state["writer"]
    if writer is not None:
        writer.close()
        _state["writer"] = None
    total = environment.stats.total
    threshold = environment.parsed_options.fail_ratio if environment.parsed_options else 0.0
    if total.num_requests == 0:
        log.error("no request was made")
        environment.process_exit_code = 1
    elif total.fail_ratio > threshold:
        log.error(
            "failure ratio %.4f exceeds the threshold %.4f (%d of %d requests failed)",
            total.fail_ratio, threshold, total.num_failures, total.num_requests,
        )  # fmt: skip
        environment.process_exit_code = 1
    else:
        environment.process_exit_code = 0
