"""Small presentation helpers for the dashboard templates."""

from urllib.parse import urlencode

from django import template
from django.utils import timezone
from django.utils.html import format_html

register = template.Library()


def age_text(seconds: float) -> str:
    """A compact age: 42s, 3m 05s, 2h 10m, 4d 3h. Mirrored by static/tether-live.js."""
    seconds = max(int(seconds), 0)
    if seconds < 60:
        return f"{seconds}s"
    minutes, s = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {s:02d}s"
    hours, m = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {m:02d}m"
    days, h = divmod(hours, 24)
    return f"{days}d {h}h"


@register.simple_tag(takes_context=True)
def age(context, moment, empty="never"):
    """`<time>` showing how long ago `moment` was; the live script keeps it ticking."""
    if not moment:
        return format_html('<span class="muted">{}</span>', empty)
    now = context.get("now") or timezone.now()
    return format_html(
        '<time class="age" datetime="{}" title="{} UTC">{}</time>',
        moment.isoformat(),
        moment.strftime("%Y-%m-%d %H:%M:%S"),
        age_text((now - moment).total_seconds()),
    )


@register.filter
def badge(status):
    if not status:
        return ""
    return format_html('<span class="badge s-{}">{}</span>', status, status)


@register.filter
def percent(value, digits=0):
    try:
        return f"{float(value) * 100:.{int(digits)}f}%"
    except (TypeError, ValueError):
        return ""


@register.filter
def meter_class(fraction):
    try:
        f = float(fraction)
    except (TypeError, ValueError):
        return ""
    return "hi" if f >= 0.9 else ("mid" if f >= 0.7 else "")


@register.simple_tag(takes_context=True)
def query_with(context, **changes):
    """The current query string with some parameters changed (None or "" drops one)."""
    params = context["request"].GET.copy()
    for key, value in changes.items():
        if value in (None, ""):
            params.pop(key, None)
        else:
            params[key] = value
    encoded = urlencode(sorted((k, v) for k, vs in params.lists() for v in vs))
    return f"?{encoded}" if encoded else "?"


@register.filter
def metric(load_metrics, key):
    if not isinstance(load_metrics, dict):
        return ""
    value = load_metrics.get(key)
    if value is None or isinstance(value, bool):
        return ""
    return value


@register.filter
def zip_counts(pairs, counts):
    return list(zip(pairs, counts))
