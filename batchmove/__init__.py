"""batchmove: move WeChat Official Account followers between user groups in bulk."""

__version__ = "0.1.0"
