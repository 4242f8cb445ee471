from perflib.serve.server import main

raise SystemExit(main())
