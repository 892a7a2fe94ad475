"""`python -m sqlatasks`: the operator's command line (see sqlatasks.cli)."""

import sys

from sqlatasks.cli import main

if __name__ == "__main__":
    sys.exit(main())
