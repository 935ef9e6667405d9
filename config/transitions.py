"""The one gate of every state machine (assignment, agent, alert).

Each machine is one table of allowed transitions, declared beside its model. Every service that
changes a status asks its machine first (`check`), so the table is the only place that says what may
happen: failover moves, registration and alert handling included. A status that stays the same is
not a transition and needs no entry — except where the table says so explicitly (an assignment moved
to another agent stays `active`, and that is a transition the table allows by name).
"""

from collections.abc import Iterable, Mapping

from config.errors import InvalidTransition


class StateMachine:
    def __init__(self, name: str, table: Mapping[str, Iterable[str]]):
        self.name = name
        self.table: dict[str, frozenset[str]] = {str(k): frozenset(str(v) for v in vs) for k, vs in table.items()}

    def allows(self, from_status: str, to_status: str) -> bool:
        return str(to_status) in self.table.get(str(from_status), frozenset())

    def check(self, from_status: str, to_status: str, *, subject: str, details: dict | None = None) -> None:
        """Raise `InvalidTransition` (409 `invalid_transition`) unless the table allows the move."""
        if not self.allows(from_status, to_status):
            raise InvalidTransition(
                f"{self.name} {subject} cannot go from {from_status} to {to_status}",
                details=(details or {}) | {"from_status": str(from_status), "to_status": str(to_status)},
            )

    def __getitem__(self, from_status: str) -> frozenset[str]:
        return self.table[str(from_status)]

    def __iter__(self):
        return iter(self.table)

    def __repr__(self) -> str:
        return f"StateMachine({self.name!r})"
