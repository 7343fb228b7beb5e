"""Leakage-free training frames and the fraud model."""
