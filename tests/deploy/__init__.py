"""Tests of the container setup: compose files, Dockerfiles, entrypoints (no Docker engine)."""
