"""megastep_jax: fast first-person reinforcement-learning environments in JAX."""
from . import (arrdict, core, cubicasa, floorplans, geometry, plotting, ragged, recording, scene,
               spaces, toys, vecenv)

__version__ = "0.1.0"
__all__ = ["arrdict", "core", "cubicasa", "floorplans", "geometry", "plotting", "ragged", "recording", "scene",
           "spaces", "toys", "vecenv"]
