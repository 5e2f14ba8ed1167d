"""Analyses of a study's trained models, beyond the tables: each re-evaluates the tracked checkpoints.

- ``runs``: the finished seed runs of a study, their checkpoint artifacts, and the data each was
  trained on (checked against the run's data fingerprint);
- ``tsne``: the fused representations of the test split embedded with t-SNE (the paper's Figure 5),
  drawn by ``report --figures``;
- ``plots``: the t-SNE panels and the per-modality bars (the paper's Figure 1, right);
- ``robustness``: test metrics with a modality dropped or under Gaussian noise, tracked in MLflow
  (``dlf-ablate robustness``); ``robust_scores``: the tables and MultiBench's robustness scores.

Orchestration: it imports the core (data, models, train), the tracking module and the report's
collector; the core never imports it.
"""
