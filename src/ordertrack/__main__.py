"""`python -m ordertrack`."""

from ordertrack.cli import main

raise SystemExit(main())
