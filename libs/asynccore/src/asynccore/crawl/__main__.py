from asynccore.crawl.cli import main

raise SystemExit(main())
