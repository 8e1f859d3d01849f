"""Retrieval of support samples: the per-modality FAISS feature database (spec §1.4) and the
hardness-dependent support sets and weights built from it (spec §1.5, §6)."""
from .index import (INDEX_KINDS, METRICS, FeatureDatabase, default_metrics, default_nlist,
                    resolve_threads)
from .supports import (K_RULES, RANKINGS, REFERENCE_MERGE_ORDER, SupportLists, retrieve_supports,
                       support_counts, support_weights)

__all__ = [
    "FeatureDatabase", "SupportLists", "retrieve_supports", "support_counts", "support_weights",
    "default_metrics", "default_nlist", "resolve_threads", "INDEX_KINDS", "METRICS", "K_RULES",
    "RANKINGS", "REFERENCE_MERGE_ORDER",
]
