#!/usr/bin/env python3
"""Run an experiment plan: the same as ``wasmop experiments run``.

    scripts/run_experiments.py --plan quick [--results DIR] [--only deployment] [--rerun]

Notebooks x parameter grid x repetitions (notebooks/plans/*.yaml), each executed by
papermill into results/<experiment>/<run-id>/; completed runs are skipped on resume.
"""

from __future__ import annotations

import sys

from wasmop.cli import main

if __name__ == "__main__":
    sys.exit(main(["experiments", "run", *sys.argv[1:]]))
