from nnscratch.cli.main import main

raise SystemExit(main())
