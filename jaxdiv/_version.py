"""The package version, in one place below every layer (the CLI reads it without JAX)."""

__version__ = "0.1.0"
