"""Cluster wing: the shared PostgreSQL run queue, its worker processes and their launcher."""
