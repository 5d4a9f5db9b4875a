"""Results for people: summaries (``show``, ``best``), the report, export, retrain and the
dashboard."""
