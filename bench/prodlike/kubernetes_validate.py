"""Hides the test-only ``kubernetes-validate`` from the processes the bench measures.

``import kubernetes`` imports ``kubernetes_validate`` (and with it jsonschema, attrs and
referencing: about 50 ms and 3 MB here) whenever it is installed. The development venv
has it for the chart tests; the handler's image does not. The bench puts this directory
first on the measured processes' ``PYTHONPATH`` (the handler's and the baseline's
alike), so they import what they would import in production.
"""

raise ImportError("kubernetes_validate is a test dependency, absent from the production image")
