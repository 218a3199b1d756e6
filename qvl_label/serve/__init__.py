"""The HTTP server: a FastAPI app and page over one shared engine (install the `serve` extra)."""
