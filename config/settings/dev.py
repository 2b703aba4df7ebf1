"""Development and embedded mode: everything from base; DEBUG only when a developer sets DEBUG=1
(the embedded default must be safe to leave running)."""

from .base import *  # noqa: F403
from .base import env

DEBUG = env.bool("DEBUG", default=False)
