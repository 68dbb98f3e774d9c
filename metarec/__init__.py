"""metarec: meta-learning benchmarks on e-commerce tasks, built on PyTorch Lightning."""

__version__ = "0.1.0"
