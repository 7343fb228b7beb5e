"""Batch transforms: the dbt project (``transforms/dbt``) and the PySpark engine."""
