"""The wasmop operator: WasmFunction and WasmRuntime logic.

The modules here are pure (no API calls) so they can be unit-tested and reused by the kopf
handlers: :mod:`.spec` parses objects, :mod:`.validation` judges a function against its
runtime, :mod:`.resources` builds the owned manifests, :mod:`.status` computes phase,
conditions, timings and revisions, and :mod:`.hpa` is the autoscaling algorithm.
"""
