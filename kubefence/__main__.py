from kubefence.cli import main

raise SystemExit(main())
