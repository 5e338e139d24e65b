"""`python -m jaxdiv ...` runs the `jaxdiv` command."""

import sys

from jaxdiv.cli import main

sys.exit(main())
