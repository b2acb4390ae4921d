"""ccproxy: use the AI subscriptions you already pay for through the standard APIs."""

__version__ = "0.1.0"
