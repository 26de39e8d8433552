from m2cofs.cli import main

raise SystemExit(main())
