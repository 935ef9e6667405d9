"""Limits on a request's headers, checked before anything else reads them, answered in the API's
one error shape whatever the path (a client that sends these is a program, not a browser).

Servers differ: some drop the connection on headers this large before the application sees them;
wherever the server passes them on, the answer is a clear 431 or 400 instead of whatever a later
layer would make of them.
"""

from django.conf import settings
from django.http import JsonResponse

from config.api.errors import error_body


class HeaderLimitsMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        headers = [(k, v) for k, v in request.META.items() if k.startswith("HTTP_") or k in ("CONTENT_TYPE", "CONTENT_LENGTH")]
        if len(headers) > settings.TETHER_MAX_REQUEST_HEADERS:
            return JsonResponse(
                error_body(
                    "too_many_headers",
                    f"the request has {len(headers)} headers; at most {settings.TETHER_MAX_REQUEST_HEADERS} are accepted",
                    {"headers": len(headers), "limit": settings.TETHER_MAX_REQUEST_HEADERS},
                ),
                status=400,
            )
        size = sum(len(k) + len(str(v)) for k, v in headers)
        if size > settings.TETHER_MAX_REQUEST_HEADER_BYTES:
            return JsonResponse(
                error_body(
                    "request_header_fields_too_large",
                    f"the request's headers are larger than {settings.TETHER_MAX_REQUEST_HEADER_BYTES // 1024} KiB",
                    {"limit_bytes": settings.TETHER_MAX_REQUEST_HEADER_BYTES},
                ),
                status=431,
            )
        return self.get_response(request)
