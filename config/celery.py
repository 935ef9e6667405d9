"""The Celery app. The beat schedule lives here, in one place, once jobs exist."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("tether")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
