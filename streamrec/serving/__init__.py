"""Serving: the ranker interface, rankers, and the HTTP API."""
