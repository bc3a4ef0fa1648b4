"""Metrics (and, later, plots and reports) of trained models."""

from .metrics import encode, evaluate_model, importance_log_likelihood, knn_errors

__all__ = ["encode", "evaluate_model", "importance_log_likelihood", "knn_errors"]
