"""vlmsam: zero-shot amodal instance segmentation from VLM attention and EfficientSAM."""

__version__ = "0.1.0"
