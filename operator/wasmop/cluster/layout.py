"""Where the embedded cluster keeps its state, and how wasmop finds the cluster to talk to.

Everything lives under one state directory (``.wasmop/`` in the repository by default,
``WASMOP_STATE_DIR`` to override) so that ``--fresh`` is a single removal and nothing
outside it is touched.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

STATE_DIR_ENV = "WASMOP_STATE_DIR"
CONTROLPLANE_BIN_ENV = "WASMOP_CONTROLPLANE_BIN"
# Every process the cluster starts carries this variable, so `down` can find strays.
CLUSTER_MARKER_ENV = "WASMOP_CLUSTER_STATE"


def repo_root() -> Path:
    """The checkout this package was installed from (editable install)."""
    return Path(__file__).resolve().parents[3]


def default_state_dir() -> Path:
    env = os.environ.get(STATE_DIR_ENV)
    return Path(env).resolve() if env else repo_root() / ".wasmop"


def controlplane_binary() -> Path:
    env = os.environ.get(CONTROLPLANE_BIN_ENV)
    return Path(env) if env else repo_root() / "controlplane" / "bin" / "wasmop-controlplane"


def go_binary(name: str) -> Path:
    """One of the cluster services built beside the control plane (``controlplane/build.sh``),
    found next to the control plane binary: ``wasmop-registry``, ``wasmop-metrics-server``."""
    return controlplane_binary().with_name(name)


@dataclass(frozen=True)
class StateLayout:
    """Paths inside one cluster's state directory."""

    root: Path

    @classmethod
    def default(cls) -> StateLayout:
        return cls(default_state_dir())

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def config(self) -> Path:
        return self.root / "config"

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd"

    @property
    def registry_data(self) -> Path:
        """The registry's filesystem storage: pushed modules survive restarts."""
        return self.root / "registry"

    @property
    def encryption_config(self) -> Path:
        """The API server's EncryptionConfiguration, key included (hence in pki/)."""
        return self.pki / "encryption-config.yaml"

    @property
    def state_format(self) -> Path:
        """Which generation of wasmop created this state dir (see ``manager``)."""
        return self.root / "FORMAT"

    @property
    def settings_file(self) -> Path:
        return self.root / "cluster.json"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def supervisor_pid(self) -> Path:
        return self.run / "supervisor.pid"

    @property
    def supervisor_status(self) -> Path:
        return self.run / "status.json"

    @property
    def control_socket(self) -> Path:
        return self.run / "supervisor.sock"

    @property
    def audit_log(self) -> Path:
        return self.logs / "audit.log"

    def kubeconfig_for(self, user: str) -> Path:
        return self.config / f"{user}.kubeconfig"

    def log_for(self, component: str) -> Path:
        return self.logs / f"{component}.log"

    def ensure(self) -> None:
        for path in (self.logs, self.run):
            path.mkdir(parents=True, exist_ok=True)
        # Keys and kubeconfigs: owner only, from creation on.
        for path in (self.pki, self.config):
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            path.chmod(0o700)


def active_kubeconfig() -> Path:
    """The kubeconfig wasmop uses: ``KUBECONFIG`` when set, else the embedded cluster's."""
    env = os.environ.get("KUBECONFIG")
    if env:
        return Path(env.split(os.pathsep)[0])
    return StateLayout.default().admin_kubeconfig
