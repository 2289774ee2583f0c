"""PostgreSQL / TimescaleDB store: migrations (``migrations``), the writer (``writer``), value columns
(``values``), batches (``batch``), store-and-forward (``spool``, ``forward``)."""
