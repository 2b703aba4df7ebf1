"""Content negotiation for the schema route.

`URL_FORMAT_OVERRIDE` is off (the training studio plan uses `format` as a parameter of its own:
ZIP import, exports), so only the schema keeps `?format=json|yaml`, which documentation tools
and people have long used to pick its rendering."""

from rest_framework.negotiation import DefaultContentNegotiation


class SchemaFormatNegotiation(DefaultContentNegotiation):
    def select_renderer(self, request, renderers, format_suffix=None):
        return super().select_renderer(
            request, renderers, format_suffix or request.query_params.get("format")
        )
