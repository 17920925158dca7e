from nnscratch.cli import main

raise SystemExit(main())
