"""Latency on the user's machine, for ``prune_by=latency``: the runtimes that time a conv or a whole exported model
(``runtimes``: onnxruntime, OpenVINO, torch), the per-conv table and whole-model fit the pruner's ``Latency`` budget
prices widths with, cached per machine (``table``), and the pruning checked against its exported, measured latency
(``measured``). Above the pruner, which it feeds with a ``cost.LatencyModel``; below slimming and the engine."""
