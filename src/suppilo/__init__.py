"""suppilo: a self-hostable customer-acquisition and lifecycle platform."""

__version__ = "0.1.0"
