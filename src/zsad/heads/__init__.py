"""Scoring heads: features and text embeddings to image scores and anomaly maps."""

from zsad.heads.base import ScoringHead
from zsad.heads.dual_branch import DualBranchHead
from zsad.heads.multiclass import MultiClassHead
from zsad.heads.topk import TopKHead

__all__ = ["DualBranchHead", "MultiClassHead", "ScoringHead", "TopKHead"]
