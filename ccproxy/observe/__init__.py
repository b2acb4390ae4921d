"""Observability plugins, fed only by the request lifecycle events: pricing (API-equivalent cost), the
usage ledger, Prometheus metrics and the raw HTTP logger. Each is a ``ccproxy.plugins`` entry point."""
