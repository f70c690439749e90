"""Evaluation beyond the one test set: extra (shifted) test sets, calibration, weight-space ensembles."""
