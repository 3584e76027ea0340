"""``python -m loadtest.sim --bind HOST:PORT [...]``: see :mod:`loadtest.sim._cli`."""

import sys

from loadtest.sim._cli import main

if __name__ == "__main__":
    sys.exit(main())
