"""The Redis key layout, built in one place. Version ``v1``; a layout change bumps it.

================================  ======  ====================================  =========
key                               type    holds                                 TTL
================================  ======  ====================================  =========
``{p}:v1:e:{event_id}``           string  applied (idempotency): ``1:<process>``  dedup_ttl
                                          until its outputs are delivered, ``d``
``{p}:v1:s:{session_id}``         list    last N ``item<TAB>type<TAB>ts``,      session
                                          newest first
``{p}:v1:u:{user_id}:h``          list    last M item ids of the user, newest   user
                                          first
``{p}:v1:u:{user_id}:c``          hash    ``events`` and one count per type     user
``{p}:v1:u:{user_id}:s``          set     the user's session ids                user
``{p}:v1:r:s:{session_id}``        hash    item -> last recommendation showing   session
``{p}:v1:r:u:{user_id}``                  it (JSON: rec_id, position, ...);
                                          ``u:`` for events without a session
``{p}:v1:pop``                    zset    item -> log2 decayed popularity       none
``{p}:v1:pop:h:{hour}``           zset    same, events in that UTC hour         none
``{p}:v1:pop:d:{device}``         zset    same, events from that device         none
``{p}:v1:probe``                  --      never written: deleted by the start-up
                                          check that streamrec may write keys
================================  ======  ====================================  =========

Popularity with exponential time decay in one sorted set: for half-life ``H`` the score kept is
``L = log2(S(t)) + t / H`` where ``S(t)`` is the decayed count at the item's last update ``t``.
The order of ``L`` equals the order of the decayed counts at *any* common time, so a plain
``ZREVRANGE`` ranks by current popularity without rewriting every item as time passes.
Popularity zsets hold no personal data and have no TTL; they are bounded by the catalogue.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LAYOUT_VERSION", "Keys", "shown_scope"]

LAYOUT_VERSION = "v1"


def shown_scope(session_id: str | None, user_id: str) -> str:
    """Whose shown items a recommendation's page joins: the session's (``s:<id>``), or for an
    event without a session the user's (``u:<id>``). The prefixes keep a session and a user
    of the same id apart (``forget-user`` deletes the user's, never a session's). Before
    this, the key was ``r:<session or user>``; such keys expire with their session TTL, and
    ``forget-user`` deletes those of the user's sessions."""
    return f"s:{session_id}" if session_id else f"u:{user_id}"


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str

    @property
    def _base(self) -> str:
        return f"{self.prefix}:{LAYOUT_VERSION}"

    def event(self, event_id: str) -> str:
        return f"{self._base}:e:{event_id}"

    def session(self, session_id: str) -> str:
        return f"{self._base}:s:{session_id}"

    def user_history(self, user_id: str) -> str:
        return f"{self._base}:u:{user_id}:h"

    def user_counters(self, user_id: str) -> str:
        return f"{self._base}:u:{user_id}:c"

    def user_sessions(self, user_id: str) -> str:
        return f"{self._base}:u:{user_id}:s"

    def shown(self, scope: str) -> str:
        """The shown items of a :func:`shown_scope`."""
        return f"{self._base}:r:{scope}"

    def popularity(self, *, hour: int | None = None, device: str | None = None) -> str:
        if hour is not None:
            return f"{self._base}:pop:h:{hour}"
        if device is not None:
            return f"{self._base}:pop:d:{device}"
        return f"{self._base}:pop"

    def probe(self) -> str:
        return f"{self._base}:probe"

    def all_pattern(self) -> str:
        return f"{self._base}:*"
