"""Routers: pick the specialist adapter for a query, or none (the base model), with a confidence.

A router is one module with a class that has `name` and `route(query) -> RouteDecision`
(see `decision.py`); `load.py` maps router names to how each is built.
"""
