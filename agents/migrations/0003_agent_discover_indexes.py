"""Discovery filtered by the database's indexes (issue 15): a pool's agents healthiest first, and on
PostgreSQL a GIN index for "has all of these capabilities" (jsonb containment, `@>`)."""

from django.db import migrations, models

GIN_FORWARD = "CREATE INDEX agents_agent_capabilities_gin ON agents_agent USING gin (capabilities jsonb_path_ops)"
GIN_BACKWARD = "DROP INDEX IF EXISTS agents_agent_capabilities_gin"


def gin_forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(GIN_FORWARD)


def gin_backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(GIN_BACKWARD)


class Migration(migrations.Migration):

    dependencies = [
        ('agents', '0002_agent_task_capacity'),
        ('pools', '0001_initial'),
    ]

    operations = [
        migrations.AddIndex(
            model_name='agent',
            index=models.Index(fields=['pool', '-health_score', 'agent_id'], name='agents_agent_discover_idx'),
        ),
        migrations.RunPython(gin_forward, gin_backward),
    ]
