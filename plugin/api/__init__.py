"""The HTTP service a support platform talks to: app factory, routes, request/response bodies, auth, middleware."""
