"""`python -m emulab …` runs the `emulab` command."""

from emulab.cli import main

main()
