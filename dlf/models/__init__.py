"""Models wing: the shared transformer layers and one sub-package or module per model family."""
