from coalmine.cli import main

raise SystemExit(main())
