"""The compiled layer: binding and checking calls, and running them on a backend."""
from .layer import Layer, compile

__all__ = ["Layer", "compile"]
