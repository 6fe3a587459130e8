"""Hypothesis strategies for WasmFunction and WasmRuntime specs a tenant or an
administrator might write: mostly plausible values, some at the limits, some wrong in
type or syntax, so that both the API server's schema and CEL rules and the operator's own
checks get to accept and to refuse; and the objects a reconcile writes for a spec both
accept (tests/unit/test_operator_properties.py, tests/integration/test_spec_properties.py).
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st
from wasmop.oci import ImageReference
from wasmop.operator.owned_objects import (
    ImageModule,
    ModuleBundle,
    build_deployment,
    build_hpa,
    build_module_configmap,
    build_service,
    module_configmap_name,
    pack_module,
)
from wasmop.operator.spec import WasmFunction, WasmRuntime, resolve
from wasmop.wellknown import DOMAIN, RUNTIME_LABEL, ZONE_LABEL

Json = Any


def mostly(good: st.SearchStrategy[Json], bad: st.SearchStrategy[Json]) -> st.SearchStrategy[Json]:
    """``good`` about nine times in ten (shrinking towards good)."""
    return st.integers(0, 9).flatmap(lambda i: bad if i == 9 else good)


def junk() -> st.SearchStrategy[Json]:
    """A value of some other type than expected."""
    return st.one_of(
        st.text(max_size=8),
        st.booleans(),
        st.integers(-(2**40), 2**40),
        st.floats(allow_nan=False, allow_infinity=False, width=32),
        st.lists(st.integers(0, 3), max_size=2),
        st.just({}),
    )


def spec_dict(**fields: st.SearchStrategy[Json]) -> st.SearchStrategy[dict[str, Json]]:
    """An object with any subset of ``fields``."""
    return st.fixed_dictionaries({}, optional=fields)


# --------------------------------------------------------------------------- values

QUANTITY_SUFFIXES = ["", "m", "k", "M", "G", "Ki", "Mi", "Gi", "Ti", "Ei", "u", "n"]
QUANTITY_EDGES = [
    "0", "0m", "1e3", "1E-3", "0.5", ".5", "5.", "+1", "-1", "-100m", "-64Mi", "1e30",
    "99999999999999999999", "1Ei", "16Ei", "0.0001", "1.5Gi", "100M", "1e308",
]  # fmt: skip


def quantities() -> st.SearchStrategy[Json]:
    plausible = st.one_of(
        st.integers(0, 2**31),
        st.builds(lambda n, s: f"{n}{s}", st.integers(0, 5000), st.sampled_from(QUANTITY_SUFFIXES)),
        st.builds(lambda a, b: f"{a}.{b}", st.integers(0, 64), st.integers(0, 999)),
        st.sampled_from(QUANTITY_EDGES),
    )
    return mostly(
        plausible, st.one_of(junk(), st.text(alphabet="0123456789.eEmMiKG+-", max_size=6))
    )


def ints(low: int, high: int) -> st.SearchStrategy[Json]:
    """Integers in range, at its edges, and beyond them."""
    return mostly(
        st.one_of(st.integers(low, high), st.sampled_from([low, high])),
        st.one_of(st.integers(low - 10, low - 1), st.integers(high + 1, high + 10**6), junk()),
    )


DNS_LABEL = r"[a-z0-9]([-a-z0-9]{0,6}[a-z0-9])?"
LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,8}[A-Za-z0-9])?"


def label_keys() -> st.SearchStrategy[str]:
    plain = st.from_regex(rf"\A{LABEL_NAME}\Z")
    prefixed = st.from_regex(rf"\A{DNS_LABEL}(\.{DNS_LABEL}){{0,2}}/{LABEL_NAME}\Z")
    limits = st.sampled_from(
        [
            "n" * 63,
            "n" * 64,
            "p" * 253 + "/n",
            "p" * 254 + "/n",
            "a/b/c",
            "/n",
            "n/",
            "Example.com/n",
            "-n",
            "n_",
            ZONE_LABEL,
            "kubernetes.io/hostname",
        ]
    )
    reserved = st.one_of(
        st.just(RUNTIME_LABEL), st.from_regex(rf"\A{DOMAIN}/{LABEL_NAME}\Z".replace(".", r"\."))
    )
    return st.one_of(plain, plain, prefixed, limits, reserved, st.text(max_size=20))


def label_values() -> st.SearchStrategy[Json]:
    plausible = st.one_of(
        st.just(""), st.from_regex(rf"\A{LABEL_NAME}\Z"), st.sampled_from(["v" * 63, "wasmtime"])
    )
    return mostly(plausible, st.one_of(st.sampled_from(["v" * 64, "-v", "a b", "v_"]), junk()))


def names() -> st.SearchStrategy[Json]:
    return mostly(st.from_regex(rf"\A{DNS_LABEL}\Z"), st.one_of(st.text(max_size=12), junk()))


# --------------------------------------------------------------------------- pieces


def resource_lists() -> st.SearchStrategy[Json]:
    return spec_dict(cpu=quantities(), memory=quantities())


def request_limits() -> st.SearchStrategy[Json]:
    return spec_dict(
        timeoutMilliseconds=ints(1, 3_600_000),
        memory=quantities(),
        outputSize=quantities(),
        fuel=ints(1, 2**62),
    )


def env_vars() -> st.SearchStrategy[Json]:
    name = mostly(
        st.from_regex(r"\A(APP_[A-Z0-9_]{1,8}|LOG_LEVEL|[A-Za-z_][A-Za-z0-9_]{0,10})\Z"),
        st.one_of(st.sampled_from(["WASMOP_X", "1ABC", "A B", "", "a" * 129]), junk()),
    )
    return st.fixed_dictionaries(
        {"name": name}, optional={"value": mostly(st.text(max_size=16), junk())}
    )


def metrics() -> st.SearchStrategy[Json]:
    resource = st.fixed_dictionaries(
        {
            "type": st.just("Resource"),
            "resource": st.fixed_dictionaries(
                {
                    "name": mostly(st.sampled_from(["cpu", "memory"]), st.text(max_size=6)),
                    "target": st.one_of(
                        st.fixed_dictionaries(
                            {"type": st.just("Utilization"), "averageUtilization": ints(1, 1000)}
                        ),
                        st.fixed_dictionaries(
                            {"type": st.just("AverageValue"), "averageValue": quantities()}
                        ),
                        spec_dict(type=junk(), averageUtilization=junk()),
                    ),
                }
            ),
        }
    )
    pods = st.fixed_dictionaries(
        {
            "type": st.just("Pods"),
            "pods": st.fixed_dictionaries(
                {
                    "metric": st.fixed_dictionaries(
                        {
                            "name": mostly(
                                st.sampled_from(["requests_per_second", "concurrency"]),
                                st.text(max_size=6),
                            )
                        }
                    ),
                    "target": st.fixed_dictionaries(
                        {
                            "type": mostly(st.just("AverageValue"), st.just("Utilization")),
                            "averageValue": quantities(),
                        }
                    ),
                }
            ),
        }
    )
    return mostly(st.one_of(resource, pods), spec_dict(type=junk()))


def scaling() -> st.SearchStrategy[Json]:
    return st.fixed_dictionaries(
        {"maxReplicas": ints(1, 1000)},
        optional={
            "engine": mostly(st.sampled_from(["operator", "hpa"]), st.text(max_size=6)),
            "minReplicas": ints(0, 1000),
            "metrics": st.lists(metrics(), max_size=3),
            "behavior": spec_dict(
                scaleUp=spec_dict(stabilizationWindowSeconds=ints(0, 3600)),
                scaleDown=spec_dict(stabilizationWindowSeconds=ints(0, 3600)),
            ),
        },
    )


def module_sources(hello_sha256: str, hello_b64: str) -> st.SearchStrategy[Json]:
    sha = mostly(st.just(hello_sha256), st.one_of(st.from_regex(r"\A[a-f0-9]{64}\Z"), junk()))
    config_map = st.fixed_dictionaries(
        {"name": names()},
        optional={
            "key": mostly(st.sampled_from(["module.wasm", "m.wasm.gz"]), st.text(max_size=8))
        },
    )
    urls = mostly(
        st.sampled_from(
            [
                "https://modules.example.com/hello.wasm",
                "http://modules.example.com/hello.wasm",
                "http://127.0.0.1:8089/hello.wasm",
                "http://169.254.169.254/latest/meta-data/",
                "http://[::1]:6443/api",
                "http://10.244.1.7:8080/",
                "https://localhost/x",
            ]
        ),
        st.one_of(
            st.sampled_from(["ftp://x/m", "https://", "not a url", "file:///etc/passwd"]), junk()
        ),
    )
    inline = mostly(st.just(hello_b64), st.one_of(st.just("not base64!"), junk()))
    images = mostly(
        st.one_of(
            st.sampled_from(
                ["registry.example.com/wasm/hello:v1", "ghcr.io/a/b@sha256:" + "a" * 64]
            ),
            st.from_regex(r"\A[a-z0-9]{1,8}(\.[a-z]{2,4})?/[a-z0-9]{1,8}(:[A-Za-z0-9_.-]{1,8})?\Z"),
        ),
        st.one_of(st.sampled_from(["", " ", "UPPER/case", "a b:c", "x@sha256:zz"]), junk()),
    )
    pull_secrets = st.lists(spec_dict(name=names()), max_size=2)
    one = st.one_of(
        st.fixed_dictionaries({"configMapRef": config_map}, optional={"sha256": sha}),
        st.fixed_dictionaries({"url": urls}, optional={"sha256": sha}),
        st.fixed_dictionaries({"inline": inline}, optional={"sha256": sha}),
        st.fixed_dictionaries(
            {"image": images}, optional={"sha256": sha, "imagePullSecrets": pull_secrets}
        ),
    )
    several = spec_dict(configMapRef=config_map, url=urls, inline=inline, image=images, sha256=sha)
    return mostly(one, several)


def function_specs(
    runtime_names: list[str], hello_sha256: str, hello_b64: str
) -> st.SearchStrategy[dict[str, Json]]:
    return st.fixed_dictionaries(
        {"module": mostly(module_sources(hello_sha256, hello_b64), junk())},
        optional={
            "version": mostly(
                st.from_regex(r"\A[A-Za-z0-9]([-A-Za-z0-9_.]{0,10}[A-Za-z0-9])?\Z"), junk()
            ),
            "runtimeRef": spec_dict(name=mostly(st.sampled_from(runtime_names), names())),
            "replicas": ints(0, 1000),
            "resources": spec_dict(requests=resource_lists(), limits=resource_lists()),
            "limits": request_limits(),
            "rollout": spec_dict(
                strategy=mostly(
                    st.sampled_from(["RollingUpdate", "Recreate"]), st.text(max_size=6)
                ),
                maxSurge=mostly(st.sampled_from(["25%", "0%", "100%", "200%", "0"]), junk()),
                maxUnavailable=mostly(st.sampled_from(["25%", "0%", "100%", "0"]), junk()),
                minReadySeconds=ints(0, 3600),
                progressDeadlineSeconds=ints(1, 3600),
            ),
            "revisionHistoryLimit": ints(1, 50),
            "healthCheck": spec_dict(
                periodSeconds=ints(1, 3600),
                timeoutSeconds=ints(1, 3600),
                failureThreshold=ints(1, 100),
                initialDelaySeconds=ints(0, 3600),
            ),
            "placement": spec_dict(
                zone=label_values(),
                nodeSelector=mostly(
                    st.dictionaries(label_keys(), label_values(), max_size=4), junk()
                ),
                tolerationSeconds=ints(0, 10**6),
            ),
            "capabilities": spec_dict(env=st.lists(env_vars(), max_size=3)),
            "scaling": scaling(),
        },
    )


def runtime_specs() -> st.SearchStrategy[dict[str, Json]]:
    flags = st.booleans()
    return spec_dict(
        engine=spec_dict(
            name=mostly(st.just("wasmtime"), st.text(max_size=6)),
            version=mostly(st.just("50.0.1"), junk()),
            image=mostly(
                st.sampled_from(["registry.local/wasmop-runtime:1", "wasmop/runtime:0.1.0"]),
                st.sampled_from([" wasmop/runtime", "a b", "x\t", ""]),
            ),
        ),
        features=spec_dict(
            simd=flags,
            bulkMemory=flags,
            referenceTypes=flags,
            multiValue=flags,
            threads=flags,
            memory64=flags,
            multiMemory=flags,
            fuel=flags,
        ),
        defaults=spec_dict(
            resources=spec_dict(requests=resource_lists(), limits=resource_lists()),
            limits=request_limits(),
        ),
        maximums=spec_dict(
            resources=resource_lists(), limits=request_limits(), replicas=ints(1, 1000)
        ),
        capabilities=spec_dict(
            env=spec_dict(
                allowed=flags,
                names=st.lists(
                    mostly(st.sampled_from(["APP_*", "LOG_LEVEL", "*"]), junk()), max_size=3
                ),
            )
        ),
        nodeSelector=mostly(
            st.dictionaries(label_keys(), label_values(), min_size=1, max_size=3).map(
                lambda d: {RUNTIME_LABEL: "wasmtime", **d}
            ),
            junk(),
        ),
    )


# --------------------------------------------------------------------------- objects


def owned_objects(
    function: WasmFunction, runtime: WasmRuntime, module: bytes
) -> list[dict[str, Any]]:
    """What a reconcile writes for a function both the API server and the operator accept,
    built the way FunctionController does (an image module: no ConfigMap). A malformed
    image reference is the operator's InvalidImage: ReferenceError, a reason like any other."""
    source = function.spec.module
    bundle: ModuleBundle | ImageModule = pack_module(module)
    objects = []
    configmap = None
    if source.image is not None:
        pinned = ImageReference.parse(source.image).pinned("sha256:" + "0" * 64)
        bundle = ImageModule(str(pinned), bundle.digest, source.pull_secrets)
    else:
        objects.append(build_module_configmap(function.namespace, bundle))
        configmap = module_configmap_name(bundle.digest)
    objects.append(
        build_deployment(resolve(function, runtime), bundle, revision=1, configmap=configmap)
    )
    objects.append(build_service(function, headless=True))
    if function.spec.scaling is not None and function.spec.scaling.engine == "hpa":
        objects.append(build_hpa(function))
    return objects
