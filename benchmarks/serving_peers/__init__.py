"""The serving benchmark's helpers: the load client, the FastAPI peer and MLServer's settings."""
