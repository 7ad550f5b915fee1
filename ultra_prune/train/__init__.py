"""ultra-prune's trainers: ``SlimTrainer`` put in front of each stock task trainer (``trainer``), the jobs it hands
its events to (``parts``: manual sparsity, the target schedule, logit distillation) and the model it trains
(``architecture``: a pruned checkpoint as itself, the one-shot prune, the in-run removal of zeroed channels)."""
