"""The experiments, one module each.

Every experiment module follows one pattern:

* ``run_<name>(session, run, *, <parameters>)`` works in a namespace of its own on a live
  cluster and records raw observations into ``run``'s ``raw/`` directory: watch events
  and markers (``watch_events.csv``), requests, probes, samples, outcomes, and whatever
  else its analysis needs. It computes no result.
* ``analyse_<name>(raw)`` is pure: from a :class:`~wasmop.bench.experiments.base.RawData`
  it builds the run's tables, observations, counts and figures (an
  :class:`~wasmop.bench.analysis.Analysis`).
* ``EXPERIMENTS = (Experiment("<name>", run_<name>, analyse_<name>),)`` registers it.

:func:`~wasmop.bench.experiments.registry.execute` runs one and then analyses what it
wrote, read back from disk, so a run and ``wasmop experiments analyse <run-dir>``
(:func:`~wasmop.bench.experiments.registry.reanalyse`) write the same files. To add an
experiment, add a module with these three things; the notebook helper
(:mod:`wasmop.bench.notebook`) and the CLI find it by name.

``mode="operator"`` deploys WasmFunctions through the operator; ``mode="plain"`` deploys
the same workloads as hand-written Deployments (a baseline, and a way to exercise the
harness without the operator). Plain-mode values are recorded under ``plain_*`` metric
names so they never count towards the operator's targets.
"""
