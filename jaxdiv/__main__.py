"""`python -m jaxdiv ...` runs the `jaxdiv` command."""

import sys

from jaxdiv import _interrupt

_interrupt.catch_early()  # a Ctrl-C from here on is the command's (see `jaxdiv.cli`)

from jaxdiv.cli import main  # noqa: E402

sys.exit(main())
