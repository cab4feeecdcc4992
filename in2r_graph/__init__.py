"""in2r-graph: rectify noisy image-text correspondence with graph refiners over
intra-modal neighbourhoods (IN2R), built on PyTorch Geometric."""

__version__ = "0.1.0"
