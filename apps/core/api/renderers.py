"""The studio envelope: `{"status": "ok", "data": ...}` around every successful JSON answer."""

from rest_framework.renderers import JSONRenderer


class EnvelopeJSONRenderer(JSONRenderer):
    """Wraps successful answers in the envelope; errors arrive already enveloped by the handler."""

    def render(self, data, accepted_media_type=None, renderer_context=None):
        response = (renderer_context or {}).get("response")
        if response is not None and response.status_code == 204:
            return b""
        already = (
            isinstance(data, dict)
            and data.get("status") in ("ok", "error")
            and ("data" in data or "error" in data)
        )
        if not already and not getattr(response, "exception", False):
            data = {"status": "ok", "data": data}
        return super().render(data, accepted_media_type, renderer_context)
