"""``python -m wasmop``: the same command line as the ``wasmop`` script."""

import sys

from wasmop.cli import main

if __name__ == "__main__":  # worker processes (spawn) import this module too
    sys.exit(main())
