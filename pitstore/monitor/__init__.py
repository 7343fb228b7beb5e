"""Monitoring of a deployed model: input and prediction drift, calibration and
performance on matured labels, data quality of the batch runs.

``drift`` is pure numpy; ``settings`` holds every threshold; ``reference``
caches the training frame's model inputs and scores; ``report`` assembles the
monitor document and its alerts; ``html`` renders it as one self-contained file.
"""
