"""OpenAPI helpers: every operation documents each error it can answer, in the one error shape."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from drf_spectacular.utils import OpenApiParameter

from config.api.errors import ErrorSerializer

ERROR_DESCRIPTIONS = {
    400: "validation_error / parse_error: bad input (the details name the fields)",
    401: "not_authenticated: no valid credential",
    403: "forbidden: this credential may not do this",
    404: "not_found: no such resource",
    406: "not_acceptable: the API answers application/json only",
    409: "conflict and its kin (stale_fencing_token, agent_at_capacity, agent_unavailable, profile_disabled, "
    "pool_mismatch, invalid_transition, idempotency_in_progress)",
    413: "request_too_large: the body is too large",
    415: "unsupported_media_type: send application/json",
    422: "idempotency_key_reused: the Idempotency-Key was used with another body",
    429: "throttled: too many requests for this credential (see Retry-After)",
    503: "service_unavailable: the database is unavailable or refused the transaction; retry (see Retry-After)",
}

IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    str,
    OpenApiParameter.HEADER,
    required=False,
    description="A retry with the same key and body gets the first answer and changes nothing "
    "(1–200 printable ASCII characters; kept 24 h, per credential).",
)
ENROLLMENT_TOKEN = OpenApiParameter(
    "X-Enrollment-Token",
    str,
    OpenApiParameter.HEADER,
    required=False,
    description="The pool's enrollment token (not needed with an operator's credential).",
)


class AutoSchema(SpectacularAutoSchema):
    """Adds the error responses every operation can give; views add theirs with `error_codes`,
    a dict of method name → list of status codes (e.g. {"post": [409, 422]})."""

    def _error_codes(self) -> list[int]:
        codes = {400, 401, 403, 404, 406, 429, 503}
        if self.method in ("POST", "PUT", "PATCH", "DELETE"):
            codes |= {413, 415}
        extra = getattr(self.view, "error_codes", {}) or {}
        codes |= set(extra.get(self.method.lower(), []))
        return sorted(codes)

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        if direction != "response":
            return responses
        for code in self._error_codes():
            if str(code) not in responses:
                body = self._get_response_for_code(ErrorSerializer, str(code), direction=direction)
                body["description"] = ERROR_DESCRIPTIONS[code]
                responses[str(code)] = body
        return responses


class TokenAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "config.api.authentication.TokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Token <key>`: an agent's token (from register) or a user's API token",
        }


def without_trailing_slash(endpoints):
    """The routes accept an optional trailing slash (`/?`); the schema names the canonical path."""
    return [(path.rstrip("/") or path, regex, method, callback) for path, regex, method, callback in endpoints]
