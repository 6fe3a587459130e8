"""Micro-benchmarks behind ``make bench-*``: each is a script (``python -m
wasmop.bench.micro.<name>``) that measures one component in one run and prints medians
and ratios beside the targets of the issue that introduced it.

    cluster_start    control-plane cold and warm start, idle memory (make bench-cluster)
    runtime          wasmtime invoke paths, compile versus cache (make bench-runtime)
    node_start       Pod start latency and memory per Pod on the wasm nodes (make bench-nodes)
    operator_deploy  function deploy, status lag, scale-out, operator CPU/RSS (make bench-operator)
"""
