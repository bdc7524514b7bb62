"""genrl: reward-based post-training of diffusion and flow-matching generators."""

__version__ = "0.1.0"
