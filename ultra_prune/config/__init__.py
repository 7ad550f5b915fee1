"""The arguments ultra-prune adds to ultralytics: one key table (``keys.KEYS``: type, choices or range, default,
help text), validated in one place (``keys.validate``), turned once into the typed settings the engine runs on
(``settings.PruneConfig``), and the source of every help text and of the README's argument table (``docs``).
Knows neither torch nor the pruner: ``yolo cfg`` and the start-up patches read it without loading either."""
