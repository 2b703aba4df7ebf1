"""Development and embedded mode: DEBUG on, everything else from base."""

from .base import *  # noqa: F403
from .base import env

DEBUG = env.bool("DEBUG", default=True)
