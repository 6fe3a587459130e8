import sys

from wasmop.cli import main

sys.exit(main())
