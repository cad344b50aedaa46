from wiretide.cli.main import main

raise SystemExit(main())
