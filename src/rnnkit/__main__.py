"""`python -m rnnkit ...`: the command line (needed under `torchrun -m rnnkit train ...`)."""

import sys

from rnnkit.cli import main

if __name__ == "__main__":
    sys.exit(main())
