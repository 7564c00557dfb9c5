"""cgdistill: train CycleGANs and distill them into small, fast generators."""

__version__ = "0.1.0"
