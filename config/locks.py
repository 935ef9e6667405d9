"""Every PostgreSQL advisory lock key Tether takes, in one place, so that no two collide."""

# Held (transaction-scoped) while a transaction inserts its event rows, until it commits: events
# therefore become visible to readers in `seq` order (invariant 4, see assignments/events.py).
EVENT_ORDER = 0x7E7E_0001

# Two-key locks (class, object id): a different lock space from the one-key locks above.
# Held while a transaction moves assignments between a pool's agents (failover, rebalancing,
# stale marking, draining, deregistering), taken before any agent row lock: two agents of one pool
# lost at once would otherwise each hold their own row and wait for the other's.
POOL_MOVES = 0x7E7E
