"""`python -m rtvol.cli ...`: how the stack and the benches start components."""

import sys

from rtvol.cli import main

sys.exit(main())
