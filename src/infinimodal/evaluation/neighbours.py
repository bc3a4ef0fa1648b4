"""Exact nearest neighbours under Gower's distance for numbers, over every reference row, in chunks.

Rows are range-scaled first (`scaled`), so that the Manhattan distance divided by the number of features is Gower's
distance (without its cap of 1 per feature, which only binds for values beyond the real rows' range). The search is
exact and brute force, in blocks of rows so that memory stays bounded: a tree (scikit-learn's BallTree) prunes
nothing in hundreds of dimensions. Columns whose values are all 0 or 1 (binary features, one-hot classes, binarised
pixels) are compared by a matrix product, |a - b| = a + b - 2ab, which is exact for 0/1 values and fast; the other
columns by `torch.cdist(p=1)`. `benchmarks/privacy_cost.py` measures the cost on MNIST-sized sets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

#: Rows of each side of one block of the distance matrix (a 2,048 x 4,096 float64 block is 64 MiB).
QUERY_BLOCK = 2048
REFERENCE_BLOCK = 4096


def scaled(rows: np.ndarray, low: np.ndarray, span: np.ndarray) -> np.ndarray:
    """Features divided by their range, so that Manhattan distance / features is Gower's distance."""
    return (np.asarray(rows, dtype=np.float64) - low) / span


def binary_columns(*row_sets: np.ndarray) -> np.ndarray:
    """Columns whose values are 0 or 1 in every given set (after scaling)."""
    binary = np.ones(row_sets[0].shape[1], dtype=bool)
    for rows in row_sets:
        binary &= ((rows == 0) | (rows == 1)).all(axis=0)
    return binary


@dataclass
class Neighbours:
    """Each query row's k nearest reference rows (`distances` increasing, Gower units, with their `indices`), and each
    reference row's distance to its nearest query row (`nearest_query`)."""

    distances: np.ndarray  # [queries, k]
    indices: np.ndarray  # [queries, k]
    nearest_query: np.ndarray  # [references]


def _block_distances(queries: torch.Tensor, references: torch.Tensor, binary: torch.Tensor) -> torch.Tensor:
    """Manhattan distances of two blocks: the binary columns by a product, the others by cdist."""
    distances = torch.zeros(len(queries), len(references), dtype=torch.float64)
    if binary.any():
        q, r = queries[:, binary].float(), references[:, binary].float()  # 0/1 counts are exact in float32
        distances += (q.sum(1, keepdim=True) + r.sum(1) - 2.0 * q @ r.T).double()
    if (~binary).any():
        distances += torch.cdist(queries[:, ~binary], references[:, ~binary], p=1)
    return distances


def gower_neighbours(
    queries: np.ndarray, references: np.ndarray, k: int = 1, binary: np.ndarray | None = None
) -> Neighbours:
    """The k nearest `references` of every row of `queries` (both range-scaled) over every reference row."""
    if k > len(references):
        raise ValueError(f"{k} neighbours asked of {len(references)} reference rows")
    binary = binary_columns(queries, references) if binary is None else binary
    q_all, r_all, mask = torch.from_numpy(queries), torch.from_numpy(references), torch.from_numpy(binary)
    best = torch.full((len(queries), k), torch.inf, dtype=torch.float64)
    best_index = torch.full((len(queries), k), -1, dtype=torch.long)
    nearest_query = torch.full((len(references),), torch.inf, dtype=torch.float64)
    with torch.no_grad():
        for q0 in range(0, len(queries), QUERY_BLOCK):
            q = q_all[q0 : q0 + QUERY_BLOCK]
            for r0 in range(0, len(references), REFERENCE_BLOCK):
                block = _block_distances(q, r_all[r0 : r0 + REFERENCE_BLOCK], mask)
                nearest_query[r0 : r0 + block.shape[1]] = torch.minimum(
                    nearest_query[r0 : r0 + block.shape[1]], block.min(0).values
                )
                width = min(k, block.shape[1])
                values, where = block.topk(width, dim=1, largest=False)
                merged = torch.cat([best[q0 : q0 + len(q)], values], dim=1)
                merged_index = torch.cat([best_index[q0 : q0 + len(q)], where + r0], dim=1)
                order = merged.argsort(dim=1, stable=True)[:, :k]
                best[q0 : q0 + len(q)] = merged.gather(1, order)
                best_index[q0 : q0 + len(q)] = merged_index.gather(1, order)
    features = queries.shape[1]
    return Neighbours(best.numpy() / features, best_index.numpy(), nearest_query.numpy() / features)
