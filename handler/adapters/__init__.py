"""Adapters: the only modules that import pika, kubernetes, minio and moto; each translates its library's errors."""
