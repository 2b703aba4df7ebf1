"""Protocol gateways of the mlbackend app, at the root (auto-included by config/urls.py)."""

from apps.mlbackend.labelprop.urls import gateway_urlpatterns as labelprop_gateway_urlpatterns
from apps.mlbackend.labelstudio.urls import gateway_urlpatterns as labelstudio_gateway_urlpatterns

urlpatterns: list = [
    # Label Studio ML backend protocol: /ml/<backend id>/...
    *labelstudio_gateway_urlpatterns,
    # labelprop (napari-labelprop) protocol: /check, /inference, /training, ... (off by default)
    *labelprop_gateway_urlpatterns,
]
