"""Names every part of wasmop shares: the API group, kinds and the labels between parts.

This is the one place they are spelled: the operator serves the API and labels what it
creates with them, the node agent labels and taints its Node and serves its daemon port,
and the gateway, the benchmarks, the load tests and the tests select and probe by them.
The CRDs under ``operator/config/crds`` spell the same group, kinds and plurals (a unit
test checks that they agree).
"""

from __future__ import annotations

# --- the custom resources' API --------------------------------------------------------

GROUP = "operators.bits-dissertation.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
FUNCTION_KIND = "WasmFunction"
FUNCTION_PLURAL = "wasmfunctions"
RUNTIME_KIND = "WasmRuntime"
RUNTIME_PLURAL = "wasmruntimes"

# --- labels, taints and ports ---------------------------------------------------------

DOMAIN = "wasm.bits-dissertation.io"
# On everything the operator creates for a function (ConfigMap, Deployment, Pods, Service),
# naming the WasmFunction: the selector of its Deployment and Service.
FUNCTION_LABEL = f"{DOMAIN}/function"
# Label on a wasm Node naming the runtime it serves, and the key of the taint that keeps
# other Pods off it (its value is the runtime's name too).
RUNTIME_LABEL = f"{DOMAIN}/runtime"
ENGINE_VERSION_LABEL = f"{DOMAIN}/engine-version"
# Label and taint key of a node that runs the project's own images as host processes
# (the embedded cluster's system node), and the RuntimeClass naming that handler.
HOST_PROCESS_LABEL = f"{DOMAIN}/host-process"
HOST_PROCESS_HANDLER = "host-process"
HOST_PROCESS_RUNTIME_CLASS = "wasmop-host-process"
ZONE_LABEL = "topology.kubernetes.io/zone"
# The kubelet's ports, on the node's own address inside its network namespace: its API
# (HTTPS, authenticated) and its health endpoint (plain HTTP, /healthz only).
DAEMON_PORT = 10250
HEALTH_PORT = 10248
# Set for the project's own processes run as host-process Pods (the system node): a
# wildcard listen address (0.0.0.0, as in-cluster manifests ask) means loopback there.
BIND_LOOPBACK_ENV = "WASMOP_BIND_LOOPBACK"

# --- the HTTP path to a function -------------------------------------------------------

# Every refusal on the way to a function (gateway or runtime) names its cause in this
# header; docs/abi.md lists the reasons.
REASON_HEADER = "X-Wasmop-Reason"
# The largest request body the platform accepts: the gateway refuses more before
# forwarding, and it is the runtime's default (and highest) per-function body cap, so the
# two cannot disagree about what a function may be sent.
MAX_REQUEST_BODY_BYTES = 16 * 2**20
BODY_TOO_LARGE_REASON = "body-too-large"
# Refusals a function server makes before it runs anything (docs/abi.md): the function
# did not run, so the gateway may hand the request to another Pod whatever its method.
REFUSED_UNRUN_REASONS = frozenset(
    {"draining", "queue-full", "queue-timeout", "overloaded", "connection-limit"}
)
