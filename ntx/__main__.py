"""`python -m ntx` runs the command-line interface."""

from ntx.cli import main

main()
