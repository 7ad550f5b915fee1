"""What a training run adds to slim a network: the L1 penalty on BatchNorm scales (``sparsity``), sparse training to
a target on a progress schedule (``target``), and logit distillation from a teacher (``distill``). Each works on a
torch model and the pruner's choices; none knows ultralytics' trainer (``ultra_prune.train`` drives them)."""
