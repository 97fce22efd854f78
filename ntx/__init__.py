"""ntx: backfill a stock exchange's market data into a local SQLite database."""

__version__ = "0.1.0"
