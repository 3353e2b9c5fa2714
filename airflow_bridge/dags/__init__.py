"""DAG files, one per file."""
