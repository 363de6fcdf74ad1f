"""Fewer query tokens: keep k of the Q-Former's N learned queries.

The number of queries is also the number of ``<image>`` placeholders the processor inserts and the
model fills, so ``config.num_query_tokens``, ``processor.num_query_tokens`` and the
``query_tokens`` parameter must change together (transformers PRs #30962, #33424; bugs #34223,
#42203 came from changing only some of them). The LM then reads k instead of N image tokens, which
is where the saving is.

Strategies:
- ``first``: queries 0 … k-1;
- ``even``: k queries evenly spaced over 0 … N-1;
- ``merge``: N queries split into k contiguous groups, each replaced by its mean.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from transformers import InstructBlipForConditionalGeneration, InstructBlipProcessor

from explore.errors import ExploreError

QUERY_STRATEGIES: tuple[str, ...] = ("first", "even", "merge")


def select_queries(queries: torch.Tensor, k: int, strategy: str) -> torch.Tensor:
    """Reduce (1, N, D) query tokens to (1, k, D) with ``strategy``."""
    n = queries.shape[1]
    if not 1 <= k <= n:
        raise ExploreError(f"cannot keep {k} of {n} query tokens; choose 1 <= k <= {n}")
    if strategy == "first":
        return queries[:, :k].clone()
    if strategy == "even":
        index = torch.from_numpy(np.rint(np.linspace(0, n - 1, k)).astype(np.int64))
        return queries[:, index].clone()
    if strategy == "merge":
        groups = np.array_split(np.arange(n), k)  # k contiguous groups, sizes differ by at most 1
        return torch.stack([queries[:, g].mean(dim=1) for g in groups], dim=1)
    raise ExploreError(f"unknown query strategy {strategy!r}; choose one of: {', '.join(QUERY_STRATEGIES)}")


def prune_queries(
    model: InstructBlipForConditionalGeneration, processor: InstructBlipProcessor, k: int, strategy: str = "even"
) -> tuple[InstructBlipForConditionalGeneration, InstructBlipProcessor]:
    """A copy of ``model`` and ``processor`` with ``k`` query tokens (the inputs are not changed)."""
    new_queries = select_queries(model.query_tokens.data, k, strategy)
    model = copy.deepcopy(model)
    processor = copy.deepcopy(processor)
    model.query_tokens = torch.nn.Parameter(new_queries, requires_grad=model.query_tokens.requires_grad)
    model.config.num_query_tokens = k
    processor.num_query_tokens = k
    return model, processor
