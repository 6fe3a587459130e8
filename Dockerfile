# The wasmop function runtime as a container image, for running functions on a real
# cluster (kind, k3s, EKS) instead of in a wasm node agent: `wasmop runtime serve`.
# The operator's Pod template mounts the module ConfigMap at /module and describes the
# function in WASMOP_* variables (wasmop.runtime.podenv), which --from-env reads.
FROM python:3.11-slim

WORKDIR /app
COPY pyproject.toml README.md ./
COPY operator ./operator

# Only what the runtime imports (the `runtime` extra of pyproject.toml), not the operator
# or the research harness.
RUN pip install --no-cache-dir ".[runtime]"

USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["python", "-m", "wasmop.runtime", "serve", "--host", "0.0.0.0", "--port", "8080"]
CMD ["--from-env"]
