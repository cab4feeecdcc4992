"""Image and text encoders mapping inputs to the joint embedding space."""

from .factory import IMAGE_ENCODERS, TEXT_ENCODERS, build_image_encoder, build_text_encoder
from .gpo import GPO
from .image import GlobalImageEncoder, RegionImageEncoder, ThumbnailCNN
from .text import EmbeddingTextEncoder, GRUTextEncoder

__all__ = [
    "GPO",
    "IMAGE_ENCODERS",
    "TEXT_ENCODERS",
    "EmbeddingTextEncoder",
    "GRUTextEncoder",
    "GlobalImageEncoder",
    "RegionImageEncoder",
    "ThumbnailCNN",
    "build_image_encoder",
    "build_text_encoder",
]
