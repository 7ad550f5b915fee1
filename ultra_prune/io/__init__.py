"""Files and output: reading and writing checkpoints safely (``checkpoint``), warnings in ultralytics' look
(``logs``), the figures runs and the demo save (``plots``), and device arguments read as ultralytics reads them
(``device``)."""
