"""`python -m rserpool …` runs the `rserpool` command (what the testbed uses inside host namespaces)."""

from rserpool.cli import main

main()
