"""What a user runs: the ``prune`` command behind ``YOLO(...).prune()``, ``yolo prune`` and ``ultra-prune prune``
(``prune``: checkpoint in, pruned checkpoint and report files out, around the engine), the end-to-end ``demo`` on a
generated dataset (``dataset``), and the ``ultra-prune`` console script (``cli``)."""
