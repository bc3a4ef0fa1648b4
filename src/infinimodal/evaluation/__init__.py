"""Metrics of trained models, and the classifiers that coherence needs."""

from .classifiers import load_classifiers
from .metrics import coherence, encode, evaluate_model, importance_log_likelihood, knn_errors, subsets_by_size

__all__ = [
    "coherence",
    "encode",
    "evaluate_model",
    "importance_log_likelihood",
    "knn_errors",
    "load_classifiers",
    "subsets_by_size",
]
