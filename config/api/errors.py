"""The one error shape of the API: every 4xx and 5xx body is

    {"error": {"code": "...", "message": "...", "details": {...}}}

Domain errors (`TetherError`) carry their own code and HTTP status; DRF's own exceptions (parse
errors, authentication, permissions, throttling, 404, 405...) and Django's 404/500 pages under
`/api/` are mapped here too, so a client has one thing to parse whatever went wrong.
"""

import logging

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import Http404, JsonResponse
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response

from config.errors import TetherError

log = logging.getLogger("tether.api")


class RequestTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "the request body is too large"
    default_code = "request_too_large"


class IdempotencyKeyReused(exceptions.APIException):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_detail = "this Idempotency-Key was already used with a different request"
    default_code = "idempotency_key_reused"


class IdempotencyInProgress(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "a request with this Idempotency-Key is still being processed; retry shortly"
    default_code = "idempotency_in_progress"


# DRF's codes, renamed where DESIGN.md names a stable one.
_CODES = {
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "not_authenticated",
    exceptions.PermissionDenied: "forbidden",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "throttled",
    exceptions.ParseError: "parse_error",
    exceptions.ValidationError: "validation_error",
}


def error_body(code: str, message: str, details=None) -> dict:
    return {"error": {"code": code, "message": message, "details": details if details is not None else {}}}


def _first_message(detail) -> str:
    """A readable one-line summary of DRF's nested error detail: `field: problem`."""
    if isinstance(detail, dict):
        for field, value in detail.items():
            inner = _first_message(value)
            return inner if field == "non_field_errors" else f"{field}: {inner}"
        return "invalid input"
    if isinstance(detail, list):
        return _first_message(detail[0]) if detail else "invalid input"
    return str(detail)


def _api_error(exc: exceptions.APIException) -> tuple[str, str, dict]:
    code = next((c for cls, c in _CODES.items() if isinstance(exc, cls)), None) or exc.default_code
    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        return code, _first_message(detail), detail
    if isinstance(exc, exceptions.Throttled):
        return code, "too many requests for this credential; retry later", {"retry_after": exc.wait and int(exc.wait + 0.999)}
    return code, str(exc.detail), {}


def exception_handler(exc, context):
    """DRF's EXCEPTION_HANDLER: every error in a view becomes the one shape."""
    if isinstance(exc, TetherError):
        return Response(error_body(exc.code, exc.message, exc.details), status=exc.http_status)
    if isinstance(exc, RequestDataTooBig):
        # Django refuses a body over DATA_UPLOAD_MAX_MEMORY_SIZE before any parser sees it.
        exc = RequestTooLarge()
    elif isinstance(exc, (OperationalError, InterfaceError)):
        # The database is unreachable or refused the transaction (lock timeout, deadlock victim):
        # nothing was written, and the client may retry — a 503, not a server bug.
        log.warning("database unavailable in %s: %s", context.get("view").__class__.__name__, exc)
        return Response(
            error_body("service_unavailable", "the database is unavailable; retry shortly"),
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": "1"},
        )
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound(str(exc) or "not found")
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    # DRF's handler sets WWW-Authenticate and Retry-After and rolls back a failed atomic block.
    # Imported here: rest_framework.views reads DEFAULT_PARSER_CLASSES at import time, and the parsers
    # import this module — a module-level import is a cycle whenever this module loads first.
    from rest_framework.views import exception_handler as drf_exception_handler

    response = drf_exception_handler(exc, context)
    if response is None:
        log.exception("unhandled error in %s", context.get("view").__class__.__name__, exc_info=exc)
        return Response(
            error_body("server_error", "the server failed to handle this request; it has been logged"),
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
    code, message, details = _api_error(exc)
    response.data = error_body(code, message, details)
    return response


# --- Django's own error pages, for requests under /api/ that never reach a DRF view --------------


def _is_api(request) -> bool:
    return request.path.startswith("/api/")


def handler404(request, exception=None):
    if _is_api(request):
        return JsonResponse(error_body("not_found", f"no such resource: {request.path[:200]}"), status=404)
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)


def handler400(request, exception=None):
    if _is_api(request):
        return JsonResponse(error_body("bad_request", "the request could not be understood"), status=400)
    from django.views.defaults import bad_request

    return bad_request(request, exception)


def handler403(request, exception=None):
    if _is_api(request):
        return JsonResponse(error_body("forbidden", "forbidden"), status=403)
    from django.views.defaults import permission_denied

    return permission_denied(request, exception)


def handler500(request):
    if _is_api(request):
        return JsonResponse(
            error_body("server_error", "the server failed to handle this request; it has been logged"), status=500
        )
    from django.views.defaults import server_error

    return server_error(request)


def csrf_failure(request, reason=""):
    """CSRF failures of session-authenticated API calls keep the API's error shape."""
    if _is_api(request):
        return JsonResponse(error_body("forbidden", f"CSRF check failed: {reason}"), status=403)
    from django.views.csrf import csrf_failure as default

    return default(request, reason)


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="stable, machine-readable: validation_error, not_found, conflict, ...")
    message = serializers.CharField()
    details = serializers.DictField(help_text="what the error concerns (fields, holder, current fencing token...)")


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()
