"""The PySpark engine: the same feature spec as dbt, rendered for Spark SQL."""
