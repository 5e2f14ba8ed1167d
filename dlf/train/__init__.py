"""Training wing: the family-agnostic loop, evaluation, in-run lanes, checkpoints and their conversion."""
