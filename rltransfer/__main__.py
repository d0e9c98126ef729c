from rltransfer.cli import main

raise SystemExit(main())
