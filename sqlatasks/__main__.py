"""`python -m sqlatasks`: the `sqlatasks` command line (see sqlatasks.commands)."""

import sys

from sqlatasks.commands import main

if __name__ == "__main__":
    sys.exit(main())
