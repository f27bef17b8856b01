"""translearn_jax: transfer learning for NLP in JAX."""

__version__ = "0.1.0"
