"""`python -m speedrun`.

May import: speedrun.cli.
"""

from speedrun.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
