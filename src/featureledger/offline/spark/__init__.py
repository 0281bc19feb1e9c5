"""The Spark offline engine (the ``spark`` extra): the DuckDB engine's answers on Spark."""

from featureledger.offline.spark.engine import SparkEngine, spark_session, stop_spark_session

__all__ = ["SparkEngine", "spark_session", "stop_spark_session"]
