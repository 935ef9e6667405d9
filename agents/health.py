"""An agent's health score from what it reports: a pure function, 0 (unusable) to 1 (perfect).

The score says whether the agent is fit for more work, not how much work it has: CPU and memory
pressure and its own error rate lower it; capacity in use does not (that is load, which the
balancing strategies weigh separately).
"""


def _fraction(metrics: dict, key: str, scale: float) -> float:
    value = metrics.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0.0
    return min(max(value / scale, 0.0), 1.0)


def health_score(load_metrics: dict) -> float:
    cpu = _fraction(load_metrics, "cpu", 100.0)
    memory = _fraction(load_metrics, "memory", 100.0)
    error_rate = _fraction(load_metrics, "error_rate", 1.0)
    # Pressure only counts once it is high: an agent at 40% CPU is as fit as one at 5%.
    pressure = 0.5 * max(cpu - 0.5, 0.0) * 2 + 0.3 * max(memory - 0.5, 0.0) * 2
    score = 1.0 - pressure - 0.5 * error_rate
    return round(min(max(score, 0.0), 1.0), 4)
