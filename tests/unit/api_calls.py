"""Which Kubernetes API verbs a part of wasmop's code uses, read from the source.

A static reading, no cluster: every call ``<...>.kube.<method>(path)`` whose path is built
by ``api_path(...)`` (in place, in a local variable, or handed down through the
parameters of helpers such as ``_apply_owned(path, ...)`` or
``TaskSupervisor.start_watch(..., path, ...)``) gives a (group, resource, verb) and
whether it names a namespace. ``kopf_needs`` adds what kopf itself does for the
handlers a registry holds. tests/unit/test_rbac.py compares the result with the RBAC
manifests.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from collections.abc import Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

# Kube's methods and the verbs the API server authorizes them as. A server-side apply
# is a PATCH that creates the object when it does not exist: the API server checks
# create for that too.
KUBE_VERBS: dict[str, frozenset[str]] = {
    "get": frozenset({"get"}),
    "list": frozenset({"list"}),
    "watch": frozenset({"watch"}),
    "list_and_watch": frozenset({"list", "watch"}),
    "list_metadata": frozenset({"list"}),
    "create": frozenset({"create"}),
    "patch": frozenset({"patch"}),
    "apply": frozenset({"patch", "create"}),
    "replace": frozenset({"update"}),
    "delete": frozenset({"delete"}),
}
API_PATH_PARAMS = ("api_version", "plural", "namespace", "name", "subresource")


@dataclass(frozen=True)
class Access:
    """One verb on one resource (``plural`` or ``plural/subresource``) of an API group."""

    group: str
    resource: str
    verb: str
    namespaced: bool  # the call names a namespace

    def __str__(self) -> str:
        where = "in a namespace" if self.namespaced else "cluster-wide"
        return f"{self.verb} {self.group or 'core'}/{self.resource} ({where})"


@dataclass(frozen=True)
class PathSpec:
    group: str
    resource: str
    namespaced: bool


def _group(api_version: str) -> str:
    return api_version.rpartition("/")[0] if "/" in api_version else ""


class _Module:
    def __init__(self, module: ModuleType) -> None:
        self.module = module
        self.tree = ast.parse(inspect.getsource(module))

    def constant(self, node: ast.expr | None) -> Any:
        """The value of a literal or of a module-level name (a wellknown constant)."""
        if node is None:
            return None
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name) and hasattr(self.module, node.id):
            return getattr(self.module, node.id)
        raise ValueError(f"{self.module.__name__}: cannot read {ast.unparse(node)} statically")


def _api_path(module: _Module, call: ast.Call) -> PathSpec | None:
    if not (isinstance(call.func, ast.Name) and call.func.id == "api_path"):
        return None
    args: dict[str, ast.expr | None] = dict.fromkeys(API_PATH_PARAMS)
    for name, arg in zip(API_PATH_PARAMS, call.args, strict=False):
        args[name] = arg
    for keyword in call.keywords:
        if keyword.arg in args:
            args[keyword.arg] = keyword.value
    api_version = module.constant(args["api_version"])
    plural = module.constant(args["plural"])
    subresource = module.constant(args["subresource"]) if args["subresource"] else None
    namespace = args["namespace"]
    namespaced = namespace is not None and not (
        isinstance(namespace, ast.Constant) and namespace.value is None
    )
    resource = f"{plural}/{subresource}" if subresource else plural
    return PathSpec(_group(api_version), resource, namespaced)


def _receiver_is_kube(func: ast.expr) -> str | None:
    """``x.kube.get`` / ``kube.get`` -> "get"."""
    if not isinstance(func, ast.Attribute) or func.attr not in KUBE_VERBS:
        return None
    owner = func.value
    name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", None)
    return func.attr if name == "kube" else None


def _callee(func: ast.expr) -> str | None:
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return None


@dataclass
class _Function:
    module: _Module
    node: ast.FunctionDef | ast.AsyncFunctionDef

    @property
    def params(self) -> list[str]:
        names = [a.arg for a in (*self.node.args.posonlyargs, *self.node.args.args)]
        return [n for n in names if n not in ("self", "cls")]

    @property
    def keyword_params(self) -> list[str]:
        return [a.arg for a in self.node.args.kwonlyargs]


def _bound_args(function: _Function, call: ast.Call) -> dict[str, ast.expr]:
    bound = dict(zip(function.params, call.args, strict=False))
    for keyword in call.keywords:
        if keyword.arg is not None:
            bound[keyword.arg] = keyword.value
    return bound


def api_accesses(modules: Iterable[str]) -> set[Access]:
    """Every API access the functions of these modules make, helpers followed."""
    loaded = [_Module(importlib.import_module(name)) for name in modules]
    functions: dict[str, list[_Function]] = {}
    for module in loaded:
        for node in ast.walk(module.tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                functions.setdefault(node.name, []).append(_Function(module, node))

    # Which verbs each function applies to a path it is handed in a parameter.
    param_verbs: dict[tuple[str, str], set[str]] = {}
    accesses: set[Access] = set()
    changed = True
    while changed:
        changed = False
        for name, defs in functions.items():
            for function in defs:
                found, flows = _scan(function, functions, param_verbs)
                if not found <= accesses:
                    accesses |= found
                    changed = True
                for param, verbs in flows.items():
                    known = param_verbs.setdefault((name, param), set())
                    if not verbs <= known:
                        known |= verbs
                        changed = True
    return accesses


def _scan(
    function: _Function,
    functions: dict[str, list[_Function]],
    param_verbs: dict[tuple[str, str], set[str]],
) -> tuple[set[Access], dict[str, set[str]]]:
    """Accesses made in ``function`` (nested functions included) and the verbs applied
    to each of its parameters."""
    module = function.module
    # A name assigned a path, at each line it is (a call uses the assignment before it).
    # A loop variable takes several paths at once.
    paths: dict[str, list[tuple[int, list[PathSpec]]]] = {}
    for node in ast.walk(function.node):
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and isinstance(node.value, ast.Call)
        ):
            spec = _api_path(module, node.value)
            if spec is not None:
                paths.setdefault(node.targets[0].id, []).append((node.lineno, [spec]))
        elif isinstance(node, ast.For) and isinstance(node.iter, ast.Tuple | ast.List):
            # for path, into in ((api_path(...), a), (api_path(...), b)): each is a path
            for item in node.iter.elts:
                pairs = (
                    zip(node.target.elts, item.elts, strict=False)
                    if isinstance(node.target, ast.Tuple) and isinstance(item, ast.Tuple)
                    else [(node.target, item)]
                )
                for target, value in pairs:
                    spec = _api_path(module, value) if isinstance(value, ast.Call) else None
                    if spec is not None and isinstance(target, ast.Name):
                        taken = paths.setdefault(target.id, [])
                        if not taken or taken[-1][0] != node.lineno:
                            taken.append((node.lineno, []))
                        taken[-1][1].append(spec)
    params = set(function.params) | set(function.keyword_params)
    for node in ast.walk(function.node):  # parameters of nested functions are paths too
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            params |= {a.arg for a in (*node.args.args, *node.args.kwonlyargs)}

    def use(arg: ast.expr, verbs: Iterable[str]) -> tuple[set[Access], dict[str, set[str]]]:
        spec = _api_path(module, arg) if isinstance(arg, ast.Call) else None
        specs = [spec] if spec is not None else []
        if spec is None and isinstance(arg, ast.Name):
            before = [(line, s) for line, s in paths.get(arg.id, []) if line <= arg.lineno]
            specs = max(before, key=lambda found: found[0])[1] if before else []
            if not specs and arg.id in params:
                return set(), {arg.id: set(verbs)}
        return {Access(s.group, s.resource, v, s.namespaced) for s in specs for v in verbs}, {}

    found: set[Access] = set()
    flows: dict[str, set[str]] = {}
    for node in ast.walk(function.node):
        if not isinstance(node, ast.Call):
            continue
        method = _receiver_is_kube(node.func)
        uses: list[tuple[ast.expr, Iterable[str]]] = []
        if method is not None and node.args:
            uses.append((node.args[0], KUBE_VERBS[method]))
        callee = _callee(node.func)
        for helper in functions.get(callee or "", []) if method is None else []:
            for param, arg in _bound_args(helper, node).items():
                verbs = param_verbs.get((callee or "", param))
                if verbs:
                    uses.append((arg, verbs))
        for arg, verbs in uses:
            more, flow = use(arg, verbs)
            found |= more
            for param, vs in flow.items():
                flows.setdefault(param, set()).update(vs)
    return found, flows


def kopf_needs(registry: Any) -> set[Access]:
    """What kopf does for a registry's handlers: list and watch every resource it handles,
    and patch those with change handlers, daemons or timers (progress and diff-base
    annotations, finalizers). Namespaced-ness is left to the caller (``namespaced`` False)."""
    needs: set[Access] = set()
    handled: list[tuple[Any, bool]] = [
        *((h.selector, True) for h in registry._changing.get_all_handlers()),
        *((h.selector, True) for h in registry._spawning.get_all_handlers()),
        *((h.selector, False) for h in registry._watching.get_all_handlers()),
    ]
    for selector, patches in handled:
        resource = selector.plural or selector.any_name
        verbs = {"list", "watch", "patch"} if patches else {"list", "watch"}
        needs |= {Access(selector.group, resource, v, False) for v in verbs}
    return needs
