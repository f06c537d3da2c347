"""VisPlay on Ray."""
