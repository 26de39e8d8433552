"""One module per ``m2cofs`` sub-command; each has ``add_parser(subparsers)`` and ``run(args)``."""
