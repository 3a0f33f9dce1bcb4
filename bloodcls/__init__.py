"""bloodcls: train, sweep and compare blood-cell image classifiers on BloodMNIST."""

__version__ = "0.1.0"
