"""``python -m medmnist_lit``."""

from medmnist_lit.cli import entry_point

entry_point()
