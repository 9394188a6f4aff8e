"""The service: the request handler, the consume loop, the watch cache, the backends, the HTTP face, probes, metrics and the runtime that assembles them."""
