"""Optional dense retrieval: a local Hugging Face embedding model's cosine ranking, fused with BM25's.

Only used when HOUSESTYLE_KNOWLEDGE_EMBEDDING_MODEL names a local checkpoint (BGE, E5, MiniLM...); nothing is
downloaded. Embeddings are mean-pooled over the attention mask and L2-normalised, computed once per index build.
The two rankings are fused by reciprocal rank fusion (score = sum of 1 / (60 + rank)), which needs no score
calibration between BM25 and cosine.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from core.errors import InputError

RRF_K = 60  # the constant of Cormack et al.'s reciprocal rank fusion
MIN_SIMILARITY = 0.5  # cosine a passage needs to enter the dense ranking, so small talk stays ungrounded
BATCH = 32


class DenseEncoder:
    """Texts to unit vectors with a local transformers encoder."""

    def __init__(self, path: str) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        folder = Path(path).expanduser()
        if not (folder / "config.json").is_file():
            raise InputError(
                f"HOUSESTYLE_KNOWLEDGE_EMBEDDING_MODEL={path} is not a model folder (no config.json); "
                "give the local path of an embedding model, or unset it for BM25 alone"
            )
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
        self.torch = torch

    def encode(self, texts: Sequence[str]) -> Any:
        """An (n, d) float32 numpy array of unit-length embeddings."""
        import numpy as np

        vectors = []
        with self.torch.no_grad():
            for start in range(0, len(texts), BATCH):
                batch = self.tokenizer(
                    list(texts[start : start + BATCH]),
                    padding=True,
                    truncation=True,
                    max_length=512,
                    return_tensors="pt",
                )
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
                vectors.append(self.torch.nn.functional.normalize(pooled, dim=-1).float().numpy())
        return np.concatenate(vectors) if vectors else np.zeros((0, 1), dtype=np.float32)


@lru_cache(maxsize=2)
def encoder(path: str) -> DenseEncoder:
    """One loaded encoder per model path and process."""
    return DenseEncoder(path)


def fuse_rankings(rankings: Sequence[Sequence[int]], k: int) -> list[tuple[int, float]]:
    """Reciprocal rank fusion of several best-first rankings of row numbers: the `k` best (row, fused score).

    Ties go to the row that appears first in the earlier ranking, so the result is deterministic.
    """
    scores: dict[int, float] = {}
    first_seen: dict[int, tuple[int, int]] = {}
    for which, ranking in enumerate(rankings):
        for rank, row in enumerate(ranking, start=1):
            scores[row] = scores.get(row, 0.0) + 1.0 / (RRF_K + rank)
            first_seen.setdefault(row, (which, rank))
    best = sorted(scores, key=lambda row: (-scores[row], first_seen[row]))[:k]
    return [(row, scores[row]) for row in best]
