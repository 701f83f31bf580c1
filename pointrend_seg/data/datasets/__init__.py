"""Dataset registrations; importing this module registers the built-in datasets."""
from .synthetic import SYNTHETIC_CLASSES, register_synthetic_shapes

register_synthetic_shapes()
