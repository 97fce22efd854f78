"""The terminal: the tally of a run, plain and JSON lines, the live display, status tables."""
