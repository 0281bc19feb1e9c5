"""The DuckDB offline engine (embedded, the default) and the sandbox for user SQL."""

from featureledger.offline.duckdb.engine import DuckDBEngine

__all__ = ["DuckDBEngine"]
