"""Settings: one immutable model, loaded from defaults < YAML < environment."""

from taskd.config.loader import load_settings
from taskd.config.settings import Settings

__all__ = ["Settings", "load_settings"]
