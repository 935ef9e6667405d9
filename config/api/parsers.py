"""The API reads JSON only, strictly: bounded size, no NaN/Infinity, no NUL characters or lone
surrogates anywhere (PostgreSQL cannot store them: they would turn into a 500 deep in a service)."""

import json

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from config.api.errors import RequestTooLarge
from config.validation import MAX_JSON_DEPTH, json_depth


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def check_text(value: str, where: str) -> None:
    if "\x00" in value:
        raise ParseError(f"{where} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ParseError(f"{where} contains a lone surrogate (invalid unicode)") from None


# A body may wrap its JSON fields a few levels deep; each field is then held to MAX_JSON_DEPTH by
# the services (config/validation.py). Deeper bodies are refused here, before anything walks them.
MAX_BODY_DEPTH = MAX_JSON_DEPTH + 8


def _check_strings(value, where="body") -> None:
    # Iterative: a recursive walk would itself fail on deep bodies.
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            check_text(item, where)
        elif isinstance(item, dict):
            for key in item:
                check_text(key, where)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


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
        if json_depth(data, limit=MAX_BODY_DEPTH) > MAX_BODY_DEPTH:
            raise ParseError(f"malformed JSON: nested deeper than {MAX_BODY_DEPTH} levels")
        _check_strings(data)
        return data
