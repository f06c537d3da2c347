"""Serving the evolved Reasoner: OpenAI wire format (openai_api) and the Ray Serve app (app)."""
