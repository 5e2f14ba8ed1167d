"""Running wing: executing run specs on this machine (executor, worker processes) and MLflow tracking."""
