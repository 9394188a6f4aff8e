"""Benchmarks of the handler against the script a user would write instead.

``python -m bench`` (or ``make bench``) runs everything against the real local RabbitMQ
and the fake Kubernetes API server (in this process), prints a table and writes
``bench/results/latest.json``. ``docs/benchmarks.md`` explains each figure.

Layout: ``rig`` (the fake cluster, the broker, the processes under test), ``clocks``
(where timestamps are taken), ``stats``, ``phases`` (one function per measurement),
``primitives`` (the bare calls the overhead ratio divides by), ``baseline`` (the user's
script), ``report`` (table, ratios, targets), ``prodlike`` (see its module).
"""


class BenchError(RuntimeError):
    """A measurement could not be taken (a process died, a reply never came)."""
