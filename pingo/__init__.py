"""pingo: grow an image-classification dataset unattended."""

__version__ = "0.1.0"
