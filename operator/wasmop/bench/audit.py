"""Who wrote what to the API server, from its audit log: writes per function by actor.

The embedded API server logs every write at Request level (Events at Metadata) to
``.wasmop/logs/audit.log`` (:data:`wasmop.cluster.components.AUDIT_POLICY`). A benchmark
marks where the log stood before it acts (:class:`AuditTail`), reads what was appended
after, keeps the writes of its own namespace (and the operator's cluster-scoped ones),
and divides by the functions it created: :func:`writes_table`.

Each write is put down to an actor (:func:`actor`: the operator, kopf acting for it,
each controller of the controller-manager by its service account, the scheduler, the
node agents, the benchmark's own client) and to what it changed (:func:`part`: an
object's spec or metadata, its status, a subresource, kopf's annotations or finalizer,
an Event). Reads are in the log only for the operator (at Metadata level): its request
rate at rest is :func:`requests_per_minute`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
READ_VERBS = frozenset({"get", "list", "watch"})
OPERATOR_IDENTITY = "wasmop-operator"  # its service account's name and its user agent
KOPF_AGENT = "kopf/"
CONTROLLER_PREFIX = "system:serviceaccount:kube-system:"
NODE_PREFIX = "system:node:"
CLIENTS = {"wasmop-admin": "client"}
WRITE_COLUMNS = ["t_ms", "actor", "verb", "resource", "part", "namespace", "name", "code"]


@dataclass(frozen=True)
class AuditWrite:
    """One request the API server answered (any status code), as the benchmarks count
    it: a write, or one of the operator's reads (``part`` is then ``read``)."""

    t_ms: float  # when the API server received it (epoch ms, microsecond precision)
    actor: str
    verb: str
    resource: str  # plural, "/subresource" appended: pods/binding, wasmfunctions/status
    part: str  # what it changed: spec, status, annotations, finalizers, event, ...
    namespace: str  # "" for cluster-scoped objects
    name: str
    code: int


def _epoch_ms(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000.0


def actor(user: str, agent: str) -> str:
    """Who made a request: ``operator`` (its own client), ``operator (kopf)`` (kopf's
    patches for it), a controller by name (``deployment-controller``), ``scheduler``,
    ``node agent``, ``client`` (the benchmark or a person), ``apiserver``, else the user."""
    if user.endswith(f":{OPERATOR_IDENTITY}") or user == OPERATOR_IDENTITY:
        return "operator (kopf)" if agent.startswith(KOPF_AGENT) else "operator"
    if user.startswith(CONTROLLER_PREFIX):
        name = user.removeprefix(CONTROLLER_PREFIX)
        return "garbage-collector" if name == "generic-garbage-collector" else name
    if user == "system:kube-scheduler":
        return "scheduler"
    if user.startswith(NODE_PREFIX):
        return "node agent"
    if user == "system:apiserver":
        return "apiserver"
    if user == "system:kube-controller-manager":
        return "controller-manager"
    return CLIENTS.get(user, user)


def part(verb: str, resource: str, subresource: str, body: Mapping[str, Any] | None) -> str:
    """What a write changed. A subresource names itself (``status``, ``binding``,
    ``scale``); a create or delete is the whole object; a patch or update of an object
    that touches only its metadata is ``annotations``, ``finalizers`` or ``metadata``
    (kopf's bookkeeping looks like that), anything else ``spec``."""
    if resource in ("events",):
        return "event"
    if subresource:
        return subresource
    if verb in ("create", "delete", "deletecollection"):
        return verb
    if not isinstance(body, Mapping):
        return "spec"
    fields = set(body) - {"apiVersion", "kind"}
    if fields == {"metadata"}:
        meta = set(body.get("metadata") or {}) - {"resourceVersion", "name", "namespace", "uid"}
        if meta == {"finalizers"}:
            return "finalizers"
        if meta and meta <= {"annotations", "finalizers"}:
            return "annotations"
        return "metadata"
    return "spec"


def _stage_counts(event: Mapping[str, Any]) -> bool:
    """One audit event per request: a watch when its response starts (it may run for
    minutes), every other request when its response is complete."""
    wanted = "ResponseStarted" if event.get("verb") == "watch" else "ResponseComplete"
    return event.get("stage") == wanted


def parse(event: Mapping[str, Any], reads: bool = False) -> AuditWrite | None:
    """The write an audit event records (with ``reads``, a read too: the policy logs
    the operator's reads), or None for other requests and unfinished stages."""
    verbs = WRITE_VERBS | READ_VERBS if reads else WRITE_VERBS
    if event.get("verb") not in verbs or not _stage_counts(event):
        return None
    ref = event.get("objectRef") or {}
    resource = str(ref.get("resource") or "")
    if not resource:
        return None
    subresource = str(ref.get("subresource") or "")
    user = str((event.get("user") or {}).get("username") or "")
    verb = str(event["verb"])
    return AuditWrite(
        t_ms=_epoch_ms(str(event.get("requestReceivedTimestamp"))),
        actor=actor(user, str(event.get("userAgent") or "")),
        verb=verb,
        resource=f"{resource}/{subresource}" if subresource else resource,
        part="read"
        if verb in READ_VERBS
        else part(verb, resource, subresource, event.get("requestObject")),
        namespace=str(ref.get("namespace") or ""),
        name=str(ref.get("name") or ""),
        code=int((event.get("responseStatus") or {}).get("code") or 0),
    )


def parse_lines(lines: Iterable[str], reads: bool = False) -> Iterator[AuditWrite]:
    """Writes (and with ``reads`` the reads) from audit log lines (JSON, one event a
    line); a torn last line is skipped."""
    for line in lines:
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        write = parse(event, reads)
        if write is not None:
            yield write


class AuditTail:
    """Where the audit log ends now, so that only what is appended later is read.

    The API server rotates the log at 100 MB (``audit-<time>.log`` beside it); a rotation
    in between is followed into the rotated file. The log is written in batches of up
    to a second, so call :meth:`read` a second or two after the last request of interest.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        stat = path.stat() if path.exists() else None
        self.inode = stat.st_ino if stat else None
        self.offset = stat.st_size if stat else 0

    def _lines(self) -> Iterator[str]:
        if not self.path.exists():
            return
        current = self.path.stat()
        if self.inode is not None and current.st_ino != self.inode:
            rotated = sorted(
                self.path.parent.glob(f"{self.path.stem}-*{self.path.suffix}"),
                key=lambda p: p.stat().st_mtime,
            )
            for old in rotated:
                if old.stat().st_ino == self.inode:
                    yield from _read_from(old, self.offset)
            yield from _read_from(self.path, 0)
        else:
            yield from _read_from(self.path, self.offset)

    def read(self, reads: bool = False) -> list[AuditWrite]:
        return list(parse_lines(self._lines(), reads))


def _read_from(path: Path, offset: int) -> Iterator[str]:
    with path.open("rb") as f:
        f.seek(offset)
        for raw in f:
            yield raw.decode("utf-8", "replace")


def frame(writes: Iterable[AuditWrite]) -> pd.DataFrame:
    """Writes as a tidy table, one row per write."""
    return pd.DataFrame([asdict(w) for w in writes], columns=WRITE_COLUMNS)


def select(writes: pd.DataFrame, namespace: str, start_ms: float, end_ms: float) -> pd.DataFrame:
    """The writes of one measurement: in ``namespace``, plus the operator's writes to
    cluster-scoped objects (a WasmRuntime's status), between ``start_ms`` and ``end_ms``."""
    if writes.empty:
        return writes
    writes = writes[writes["part"] != "read"]
    in_window = writes["t_ms"].between(start_ms, end_ms)
    ours = writes["namespace"] == namespace
    operator_cluster = (writes["namespace"] == "") & writes["actor"].str.startswith("operator")
    return writes[in_window & (ours | operator_cluster)]


def writes_table(writes: pd.DataFrame, functions: int) -> pd.DataFrame:
    """Writes per created function by actor, resource and part, most first, with a
    ``total`` row: the table the benchmarks print. ``rejected`` counts the writes the API
    server refused (409 Conflict: a controller wrote from a stale cache), which cost it a
    request but no change."""
    columns = ["actor", "resource", "part", "writes", "rejected", "writes_per_function"]
    if writes.empty or functions <= 0:
        return pd.DataFrame(columns=columns)
    table = (
        writes.assign(rejected=writes["code"] >= 400)
        .groupby(["actor", "resource", "part"], as_index=False)
        .agg(writes=("code", "size"), rejected=("rejected", "sum"))
        .sort_values(["writes", "actor", "resource"], ascending=[False, True, True])
    )
    total = pd.DataFrame(
        [{"actor": "total", "resource": "", "part": "", "writes": int(table["writes"].sum()),
          "rejected": int(table["rejected"].sum())}]
    )  # fmt: skip
    table = pd.concat([table, total], ignore_index=True)
    table["writes_per_function"] = table["writes"] / functions
    return table[columns]


def by_actor(writes: pd.DataFrame, functions: int) -> pd.DataFrame:
    """Writes per created function for each actor (its parts summed)."""
    if writes.empty or functions <= 0:
        return pd.DataFrame(columns=["actor", "writes", "writes_per_function"])
    table = writes.groupby("actor", as_index=False).size().rename(columns={"size": "writes"})
    table["writes_per_function"] = table["writes"] / functions
    return table.sort_values("writes", ascending=False, ignore_index=True)


def format_table(table: pd.DataFrame) -> str:
    """The writes table as aligned text for a terminal."""
    header = f"{'actor':<28}{'resource':<30}{'part':<13}{'writes':>8}{'refused':>9}"
    lines = [f"  {header}{'per function':>14}"]
    for row in table.itertuples(index=False):
        lines.append(
            f"  {row.actor:<28}{row.resource:<30}{row.part:<13}{row.writes:>8}{row.rejected:>9}"
            f"{row.writes_per_function:>14.2f}"
        )
    return "\n".join(lines)


def requests_per_minute(
    requests: pd.DataFrame, start_ms: float, end_ms: float, actor_prefix: str = "operator"
) -> pd.DataFrame:
    """The operator's requests (reads and writes) between ``start_ms`` and ``end_ms``,
    per verb and resource, as a rate per minute."""
    columns = ["verb", "resource", "requests", "per_minute"]
    minutes = (end_ms - start_ms) / 60000.0
    if requests.empty or minutes <= 0:
        return pd.DataFrame(columns=columns)
    own = requests[
        requests["actor"].str.startswith(actor_prefix) & requests["t_ms"].between(start_ms, end_ms)
    ]
    table = (
        own.groupby(["verb", "resource"], as_index=False)
        .size()
        .rename(columns={"size": "requests"})
    )
    table["per_minute"] = table["requests"] / minutes
    return table.sort_values("requests", ascending=False, ignore_index=True)[columns]
