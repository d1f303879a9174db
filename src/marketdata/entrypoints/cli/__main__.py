"""`python -m marketdata.entrypoints.cli`: the `marketdata` command."""

import sys

from marketdata.entrypoints.cli import main

sys.exit(main())
