"""``python -m crawler URL``: the CLI (:func:`crawler.cli.main`)."""

from crawler.cli import main

raise SystemExit(main())
