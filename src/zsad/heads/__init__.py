"""Scoring heads: features and text embeddings to image scores and anomaly maps."""

from zsad.heads.base import ScoringHead
from zsad.heads.dual_branch import DualBranchHead
from zsad.heads.multiclass import MultiClassHead
from zsad.heads.saga import SAGAHead
from zsad.heads.topk import TopKHead
from zsad.heads.windows import WindowHead

__all__ = ["DualBranchHead", "MultiClassHead", "SAGAHead", "ScoringHead", "TopKHead", "WindowHead"]
