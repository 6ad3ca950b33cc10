"""Plugin: the FastAPI service and CLI a support platform talks to; composes collector, trainer and serving."""
