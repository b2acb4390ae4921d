"""ccproxy's own benchmark (``make bench``): a fake upstream, nginx (the reference) and ccproxy side by side.

Never imported by the proxy itself, and not part of the unit tests; see docs/performance.md for the method.
"""
