"""jaxlr: linear models and small networks on MNIST in functional JAX."""

__version__ = "0.1.0"
