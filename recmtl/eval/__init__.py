"""Evaluation: chunked full ranking over all items (:mod:`.ranking`) and top-K metrics (:mod:`.metrics`)."""

from recmtl.data.csr import CSR
from recmtl.eval.metrics import DEFAULT_KS, METRICS, metric_key, metric_keys, topk_metrics
from recmtl.eval.ranking import RankingResult, rank_scores, rank_users

__all__ = [
    "CSR",
    "DEFAULT_KS",
    "METRICS",
    "RankingResult",
    "metric_key",
    "metric_keys",
    "rank_scores",
    "rank_users",
    "topk_metrics",
]
