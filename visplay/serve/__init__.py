"""Serving the evolved Reasoner: what a request may contain (chat_request) and the Ray Serve LLM app (app)."""
