"""`python -m speedrun`.

May import: speedrun.cli.
"""

from speedrun.cli import main

raise SystemExit(main())
