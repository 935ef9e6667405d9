"""The Celery app, and the one beat schedule (built from `config.schedule.JOBS`, intervals from the
TETHER_JOB_*_INTERVAL_SECONDS settings). The tasks are thin wrappers in each app's `tasks.py`."""

import os

from celery import Celery

from config.schedule import beat_schedule

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("tether")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_after_configure.connect
def _beat_schedule(sender, **kwargs):
    # Built when the configuration is first used (Django settings are loaded by then, not at import).
    sender.conf.beat_schedule = beat_schedule()
