"""The inference service: FastAPI routes, the served model with hot reload, loss-free
prediction logging and Prometheus metrics correct across workers."""
