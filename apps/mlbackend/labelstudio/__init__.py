"""The Label Studio ML backend half of the mlbackend app (see views.py for the protocol)."""
