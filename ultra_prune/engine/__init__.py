"""The one prune-once engine: a model and a typed ``PruneConfig`` in, the pruned model and its ``PruneReport`` out
(``once.prune_once``). It resolves ``prune_round=auto``, gathers Taylor scores from data (``calibrate``), measures
latency where the budget is latency, and prunes as a sparse-target checkpoint recorded it. Both the training side
(one-shot ``prune=``) and the ``prune`` command call it; it writes no file."""
