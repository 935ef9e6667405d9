"""Checks on values every service shares, so the API, the admin and jobs refuse the same bad input
with the same message — before anything is written."""

import json
import math
import re

from config.errors import ValidationFailed

# Ids travel in URL paths, logs and WebSocket filters: letters, digits and . _ : @ - only.
IDENTIFIER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")
MAX_JSON_BYTES = 16 * 1024
MAX_LIST_ITEMS = 100
MAX_ITEM_CHARS = 200
# Deeper JSON is refused: nested hundreds of levels it passes the size cap, then breaks whatever
# walks it recursively later (pickling for the cache, the JSON encoder, jsonb) — after commit.
MAX_JSON_DEPTH = 32
# Whole numbers beyond this are refused before any float arithmetic (10**400 overflows a float).
MAX_JSON_INT = 2**63 - 1

# Known load metrics and their allowed ranges; others may be any finite number or short string.
LOAD_METRIC_RANGES = {
    "cpu": (0.0, 100.0),
    "memory": (0.0, 100.0),
    "active_connections": (0, 1_000_000),
    "pending_tasks": (0, 1_000_000),
    "error_rate": (0.0, 1.0),
}
MAX_LOAD_METRICS = 32


def clean_identifier(field: str, value) -> str:
    if not isinstance(value, str) or not IDENTIFIER_RE.match(value):
        raise ValidationFailed(
            f"{field} must be 1–128 characters of letters, digits and . _ : @ - (starting with a letter or digit)",
            details={field: ["invalid identifier"]},
        )
    return value


def clean_text(field: str, value, *, max_length: int = 200) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValidationFailed(f"{field} must be a string", details={field: ["not a string"]})
    if len(value) > max_length:
        raise ValidationFailed(f"{field} is longer than {max_length} characters", details={field: ["too long"]})
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValidationFailed(f"{field} contains control characters", details={field: ["control characters"]})
    return value


def clean_string_list(field: str, value) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValidationFailed(f"{field} must be a list of strings", details={field: ["not a list"]})
    if len(value) > MAX_LIST_ITEMS:
        raise ValidationFailed(f"{field} has more than {MAX_LIST_ITEMS} items", details={field: ["too many items"]})
    for item in value:
        if not isinstance(item, str):
            raise ValidationFailed(f"{field} must be a list of strings", details={field: ["items must be strings"]})
        clean_text(field, item, max_length=MAX_ITEM_CHARS)
    return value


def json_depth(value, *, limit: int = MAX_JSON_DEPTH) -> int:
    """How deeply `value` nests (a scalar is 0, `{}` is 1), counted without recursion and up to
    `limit + 1` at most, so that any depth is measured safely."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _check_json_values(field: str, value) -> None:
    if json_depth(value) > MAX_JSON_DEPTH:
        raise ValidationFailed(
            f"{field} nests deeper than {MAX_JSON_DEPTH} levels", details={field: ["nested too deeply"]}
        )
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, int) and not isinstance(item, bool) and abs(item) > MAX_JSON_INT:
            raise ValidationFailed(
                f"{field} holds a whole number beyond 64 bits", details={field: ["number too large"]}
            )


def clean_json_object(field: str, value) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValidationFailed(f"{field} must be a JSON object", details={field: ["not an object"]})
    _check_json_values(field, value)
    try:
        encoded = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        raise ValidationFailed(f"{field} must hold plain JSON values", details={field: ["not JSON"]}) from None
    if len(encoded.encode("utf-8", "surrogatepass")) > MAX_JSON_BYTES:
        raise ValidationFailed(f"{field} is larger than {MAX_JSON_BYTES // 1024} KiB", details={field: ["too large"]})
    if "\\u0000" in encoded:
        # PostgreSQL's jsonb cannot store NUL characters.
        raise ValidationFailed(f"{field} contains NUL characters", details={field: ["NUL character"]})
    return value


def clean_load_metrics(value) -> dict:
    metrics = clean_json_object("load_metrics", value)
    if len(metrics) > MAX_LOAD_METRICS:
        raise ValidationFailed("load_metrics has too many keys", details={"load_metrics": ["too many keys"]})
    errors = {}
    for key, number in metrics.items():
        if isinstance(number, bool):
            errors[key] = "must be a number"
            continue
        if isinstance(number, int):
            number = float(number)  # within 64 bits (checked above), so it fits a float
        if key in LOAD_METRIC_RANGES:
            low, high = LOAD_METRIC_RANGES[key]
            if not isinstance(number, (int, float)) or not math.isfinite(number) or not low <= number <= high:
                errors[key] = f"must be a number from {low} to {high}"
        elif isinstance(number, (int, float)):
            if not math.isfinite(number) or abs(number) > 1e12:
                errors[key] = "must be a finite number of sensible size"
        elif not (isinstance(number, str) and len(number) <= MAX_ITEM_CHARS):
            errors[key] = "must be a number or a short string"
    if errors:
        raise ValidationFailed("load_metrics has values out of range", details={"load_metrics": errors})
    return metrics


def clean_int(field: str, value, *, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ValidationFailed(
            f"{field} must be a whole number from {minimum} to {maximum}", details={field: ["out of range"]}
        )
    return value


def clean_float(field: str, value, *, minimum: float, maximum: float) -> float:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_JSON_INT:
        raise ValidationFailed(f"{field} must be from {minimum} to {maximum}", details={field: ["out of range"]})
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValidationFailed(f"{field} must be a number", details={field: ["not a number"]})
    if not minimum <= value <= maximum:
        raise ValidationFailed(f"{field} must be from {minimum} to {maximum}", details={field: ["out of range"]})
    return float(value)


def clean_bool(field: str, value) -> bool:
    if not isinstance(value, bool):
        raise ValidationFailed(f"{field} must be true or false", details={field: ["not a boolean"]})
    return value


def clean_choice(field: str, value, choices) -> str:
    allowed = [str(c) for c in choices.values] if hasattr(choices, "values") else [str(c) for c in choices]
    if value not in allowed:
        raise ValidationFailed(
            f"{field} must be one of: {', '.join(allowed)}", details={field: [f"unknown value {str(value)[:50]!r}"]}
        )
    return value


def clean_fields(kind: str, fields: dict, checks: dict) -> dict:
    """Check each given field with its own check; a field with no check is refused by name."""
    unknown = set(fields) - set(checks)
    if unknown:
        raise ValidationFailed(
            f"unknown {kind} fields: {', '.join(sorted(unknown))}", details={f: ["unknown field"] for f in unknown}
        )
    return {name: checks[name](value) for name, value in fields.items()}
