"""The wasmop operator: kopf handlers that turn WasmFunctions into running Deployments.

Pure logic, unit-tested without a cluster: :mod:`.spec` parses WasmFunction and
WasmRuntime objects, :mod:`.validation` judges a function against its runtime,
:mod:`.owned_objects` builds the ConfigMap, Deployment, Service and HPA a function owns,
:mod:`.status` computes phase, conditions, timings and revisions, :mod:`.hpa` is the
autoscaling algorithm, :mod:`.quantity` reads resource quantities, and
:mod:`.pod_index` and :mod:`.node_index` keep what the watches report.

Modules that talk to the API server or to other processes: :mod:`.app` (the operator
process and its kopf handlers), :mod:`.function_controller` (reconcile a function),
:mod:`.state` (write its status), :mod:`.scaling` (scrape metrics, apply decisions),
:mod:`.modules` (fetch and check modules) and :mod:`.telemetry` (metrics and health).
"""
