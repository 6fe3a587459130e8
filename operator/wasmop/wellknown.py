"""Names and numbers the wasm node agents publish and the rest of wasmop reads.

The agent labels and taints its Node with these and serves its daemon on this port; the
operator, the cluster manager and the benchmarks select, tolerate and probe by them.
"""

from __future__ import annotations

DOMAIN = "wasm.bits-dissertation.io"
# Label on a wasm Node naming the runtime it serves, and the key of the taint that keeps
# other Pods off it (its value is the runtime's name too).
RUNTIME_LABEL = f"{DOMAIN}/runtime"
ENGINE_VERSION_LABEL = f"{DOMAIN}/engine-version"
ZONE_LABEL = "topology.kubernetes.io/zone"
# The kubelet's port, on the node's own address inside its network namespace.
DAEMON_PORT = 10250
