"""Who did something: a person, an agent, or one of Tether's own jobs. Every event names one."""

from dataclasses import dataclass

from config.errors import Forbidden


@dataclass(frozen=True)
class Actor:
    kind: str  # "user", "agent" or "system"
    name: str
    is_operator: bool = False

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"

    @classmethod
    def for_user(cls, user) -> "Actor":
        return cls("user", user.get_username(), is_operator=user_is_operator(user))

    @classmethod
    def for_agent(cls, agent_id: str) -> "Actor":
        return cls("agent", agent_id)

    @classmethod
    def system(cls, job: str) -> "Actor":
        # Tether's own jobs act with an operator's authority (they force-release, fail over...).
        return cls("system", job, is_operator=True)

    @property
    def is_agent(self) -> bool:
        return self.kind == "agent"


OPERATORS_GROUP = "operators"


def user_is_operator(user) -> bool:
    """Staff users and members of the `operators` group may steer the fleet."""
    if not user or not user.is_authenticated or not user.is_active:
        return False
    if user.is_staff or user.is_superuser:
        return True
    return user.groups.filter(name=OPERATORS_GROUP).exists()


def require_operator(actor: Actor, action: str) -> None:
    if not actor.is_operator:
        raise Forbidden(f"only an operator may {action}")


def require_self_or_operator(actor: Actor, agent_id: str, action: str) -> None:
    """Invariant 7: an agent's credential acts only for that agent."""
    if actor.is_operator:
        return
    if actor.is_agent and actor.name == agent_id:
        return
    raise Forbidden(f"{actor} may not {action} for agent {agent_id!r}", details={"agent_id": agent_id})
