# The wasmop function runtime as a container image, for running functions on a real
# cluster (kind, k3s, EKS) instead of in a wasm node agent: `wasmop runtime serve`.
# The operator's Pod template mounts the module ConfigMap at /module and describes the
# function in WASMOP_* variables (wasmop.runtime.podenv), which --from-env reads.
FROM python:3.11-slim

WORKDIR /app
COPY pyproject.toml README.md ./
COPY operator ./operator

# Only what the runtime imports, not the whole harness (operator, notebooks, Locust).
RUN pip install --no-cache-dir --no-deps . \
 && pip install --no-cache-dir "wasmtime==50.0.1" "aiohttp>=3.11,<4" "uvloop>=0.21" \
      "prometheus_client>=0.21"

USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["python", "-m", "wasmop.runtime", "serve", "--host", "0.0.0.0", "--port", "8080"]
CMD ["--from-env"]
