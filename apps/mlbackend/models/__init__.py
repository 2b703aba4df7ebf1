"""Models of the mlbackend app: its Label Studio half (`labelstudio`) and its labelprop half
(`labelprop`), each in its own module. A half that is not there yet does not break the other."""

from importlib import util as _util

if _util.find_spec(f"{__name__}.labelstudio") is not None:
    from .labelstudio import *  # noqa: F403

if _util.find_spec(f"{__name__}.labelprop") is not None:
    from .labelprop import *  # noqa: F403
