"""dlf-ablate: reproduce and extend the ablation studies of DLF (AAAI 2025)."""

__version__ = "0.1.0"
