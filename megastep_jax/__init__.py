"""megastep_jax: fast first-person reinforcement-learning environments in JAX."""
from . import arrdict, geometry, spaces, toys

__version__ = "0.1.0"
__all__ = ["arrdict", "geometry", "spaces", "toys"]
