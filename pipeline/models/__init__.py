"""Models we implement ourselves (EfficientSAM), loadable from the official checkpoints."""
