from django.apps import AppConfig


class MlbackendConfig(AppConfig):
    name = "apps.mlbackend"
    label = "mlbackend"
    verbose_name = "ML backends"

    def ready(self) -> None:
        # Each protocol's error shape for errors answered outside its views.
        from apps.core.errors import register_error_answer
        from apps.mlbackend.labelprop import http as labelprop_http
        from apps.mlbackend.labelprop.urls import gateway_urlpatterns as labelprop_routes
        from apps.mlbackend.labelstudio import http as labelstudio_http

        register_error_answer("/ml/", labelstudio_http.error_answer)
        for route in labelprop_routes:  # labelprop's routes are at the root: each by its path
            register_error_answer(f"/{route.pattern}", labelprop_http.error_answer)

        # Label Studio half: the `labelstudio_train` task kind.
        from apps.mlbackend.labelstudio.handlers import register_kinds as register_labelstudio

        register_labelstudio()

        # labelprop half: the `labelprop_propagate` and `labelprop_train` task kinds.
        from apps.mlbackend.labelprop.handlers import register_kinds as register_labelprop

        register_labelprop()
