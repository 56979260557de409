"""Scoring heads: features and text embeddings to image scores and anomaly maps."""

from zsad.heads.base import ScoringHead
from zsad.heads.dual_branch import DualBranchHead

__all__ = ["DualBranchHead", "ScoringHead"]
