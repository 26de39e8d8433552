"""``python -m m2cofs``: the command line.

The guard matters: worker processes started with the "spawn" method import the main module
again (as ``__mp_main__``); without it every preprocessing worker would re-run the command.
"""

from m2cofs.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
