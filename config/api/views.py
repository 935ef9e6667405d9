"""Base classes for the API's views: query strings are checked for NUL bytes and invalid unicode
before any filter touches the database (PostgreSQL refuses them with an error, not a miss). And when
a request reached the server, for views that wait (`request_received`)."""

import time

from rest_framework import generics
from rest_framework.exceptions import ParseError, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView as DRFAPIView

from config.api.parsers import check_text

# The environ key where `make serve`'s HTTP threads (config/wsgi_threads.py) note when a request
# reached the process (time.monotonic()), before it waited in line for a thread.
RECEIVED = "tether.received"


def request_received(request) -> float:
    """When the request reached this process, on time.monotonic()'s clock: a long-poll counts its
    wait from there, so that one that waited for a thread does not sleep its whole wait on top (and
    outlast its client's timeout). Now, where the server does not say (Django's ASGI handler)."""
    return request.META.get(RECEIVED) or time.monotonic()


class SafeQueryMixin:
    def initial(self, request, *args, **kwargs):
        for name, values in request.query_params.lists():
            for value in [name, *values]:
                try:
                    check_text(value, f"query parameter {name[:50]!r}")
                except ParseError as exc:
                    raise ValidationError({"query": [str(exc.detail)]}) from None
        super().initial(request, *args, **kwargs)


class APIView(SafeQueryMixin, DRFAPIView):
    pass


class ListAPIView(SafeQueryMixin, generics.ListAPIView):
    pass


class DecoratedListMixin:
    """Lets a list view add what a page needs in a fixed number of queries (`decorate(objects)`)."""

    def decorate(self, objects: list) -> None:
        pass

    def list(self, request, *args, **kwargs):
        queryset = self.filter_queryset(self.get_queryset())
        page = self.paginate_queryset(queryset)
        objects = list(page) if page is not None else list(queryset)
        self.decorate(objects)
        data = self.get_serializer(objects, many=True).data
        return self.get_paginated_response(data) if page is not None else Response(data)
