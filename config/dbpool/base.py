"""Django's PostgreSQL backend, except that the pool takes its `check` from OPTIONS["pool"] when
one is there (see config/dbpool/__init__.py). Everything else is Django's own.

The `pool` property is Django 5.2's (django/db/backends/postgresql/base.py) with one line changed,
as Django changed it after 5.2 (ticket #37075: `pool_options.setdefault("check", ...)`). On a Django
with that change this module can go, and ENGINE go back to "django.db.backends.postgresql".
"""

from django.core.exceptions import ImproperlyConfigured
from django.db.backends.base.base import NO_DB_ALIAS
from django.db.backends.postgresql import base
from psycopg_pool import ConnectionPool  # settings name this backend only with a pool


class DatabaseWrapper(base.DatabaseWrapper):
    @property
    def pool(self):
        pool_options = self.settings_dict["OPTIONS"].get("pool")
        if self.alias == NO_DB_ALIAS or not pool_options:
            return None

        if self.alias not in self._connection_pools:
            if self.settings_dict.get("CONN_MAX_AGE", 0) != 0:
                raise ImproperlyConfigured("Pooling doesn't support persistent connections.")
            pool_options = {} if pool_options is True else dict(pool_options)
            connect_kwargs = self.get_connection_params()
            # Ensure we run in autocommit, Django properly sets it later on.
            connect_kwargs["autocommit"] = True
            enable_checks = self.settings_dict["CONN_HEALTH_CHECKS"]
            # The one change: a `check` in the options is used instead of Django's.
            pool_options.setdefault("check", ConnectionPool.check_connection if enable_checks else None)
            pool = ConnectionPool(
                kwargs=connect_kwargs,
                open=False,  # Do not open the pool during startup.
                configure=self._configure_connection,
                **pool_options,
            )
            # setdefault() ensures that multiple threads don't set this in parallel (Django's note):
            # the pool is not opened above, so at worst the first of several threads wins.
            self._connection_pools.setdefault(self.alias, pool)

        return self._connection_pools[self.alias]
