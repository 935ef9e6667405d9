"""The API reads JSON only, strictly: bounded size, no NaN/Infinity, no NUL characters or lone
surrogates anywhere (PostgreSQL cannot store them: they would turn into a 500 deep in a service)."""

import json

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from config.api.errors import RequestTooLarge


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def check_text(value: str, where: str) -> None:
    if "\x00" in value:
        raise ParseError(f"{where} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ParseError(f"{where} contains a lone surrogate (invalid unicode)") from None


def _check_strings(value, where="body", depth=0) -> None:
    if isinstance(value, str):
        check_text(value, where)
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(key, where)
            _check_strings(item, where, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_strings(item, where, depth + 1)


class StrictJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.TETHER_API_MAX_BODY_BYTES
        request = parser_context["request"] if parser_context else None
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0) if request is not None else 0
        except ValueError:
            declared = 0
        if declared > limit:
            raise RequestTooLarge(f"the request body is larger than {limit // 1024} KiB")
        raw = stream.read(limit + 1)
        if len(raw) > limit:
            raise RequestTooLarge(f"the request body is larger than {limit // 1024} KiB")
        try:
            data = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
        except UnicodeDecodeError:
            raise ParseError("the request body is not UTF-8") from None
        except RecursionError:
            raise ParseError("malformed JSON: nested too deeply") from None
        except ValueError as exc:
            raise ParseError(f"malformed JSON: {exc}") from None
        try:
            _check_strings(data)
        except RecursionError:
            raise ParseError("malformed JSON: nested too deeply") from None
        return data
