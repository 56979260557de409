"""zsad against the official code of each method, on the same seeded random weights and images (vs_official.py)."""
