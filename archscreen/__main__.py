from archscreen.cli import main

raise SystemExit(main())
