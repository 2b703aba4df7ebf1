"""OpenAPI: document the envelope around every /api/ answer and the shared error shape."""

_ERROR = {
    "type": "object",
    "required": ["status", "error"],
    "properties": {
        "status": {"type": "string", "enum": ["error"]},
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {
                    "type": "string",
                    "example": "NOT_FOUND",
                    "description": "NOT_FOUND, CONFLICT, TRAINING_IN_PROGRESS, VALIDATION_ERROR, "
                    "UNAUTHORIZED, FORBIDDEN, PAYLOAD_TOO_LARGE, RATE_LIMITED, INTERNAL_ERROR",
                },
                "message": {"type": "string"},
                "details": {"type": "object", "additionalProperties": True},
            },
        },
    },
}


_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def _json_only_request(operation: dict) -> None:
    """The main API is a JSON API: a body that can be JSON is documented as JSON only.

    DRF's default parsers also read form encodings, where every value is a string ("0" for a
    boolean, "" for an omitted field) and which no client of the API uses; upload routes, whose
    only body is multipart or a raw stream, keep theirs.
    """
    content = operation.get("requestBody", {}).get("content", {})
    if "application/json" in content:
        for media_type in _FORM_TYPES:
            content.pop(media_type, None)


def envelope_postprocessing_hook(result, generator, request, public):
    """Wrap 2xx JSON schemas of /api/ paths in `{status: ok, data}` and add the error shape."""
    components = result.setdefault("components", {}).setdefault("schemas", {})
    components["ErrorEnvelope"] = _ERROR
    error_ref = {"$ref": "#/components/schemas/ErrorEnvelope"}
    for path, operations in result.get("paths", {}).items():
        if not path.startswith("/api/"):
            continue
        for operation in operations.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            _json_only_request(operation)
            for status, response in operation["responses"].items():
                content = response.get("content", {}).get("application/json")
                if status.startswith("2") and content and "schema" in content:
                    content["schema"] = {
                        "type": "object",
                        "required": ["status", "data"],
                        "properties": {
                            "status": {"type": "string", "enum": ["ok"]},
                            "data": content["schema"],
                        },
                    }
            operation["responses"].setdefault(
                "default",
                {
                    "description": "Error envelope",
                    "content": {"application/json": {"schema": error_ref}},
                },
            )
    return result
