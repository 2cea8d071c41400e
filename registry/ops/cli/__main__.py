"""`python -m registry.ops.cli`: the `jobreg` command."""

import sys

from registry.ops.cli import main

sys.exit(main())
