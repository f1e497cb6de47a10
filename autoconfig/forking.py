"""State never crosses a fork: the child forgets what belongs to its parent.

gunicorn imports the app and may open a store before it forks its workers.
A SQLite connection or a PostgreSQL pool (its sockets, its threads) used by
two processes at once corrupts both, so every object that holds connections
registers here and is told in each forked child to drop them without
touching them.  The request metrics do the same with their in-memory tally
(the parent writes it), their writer thread (threads do not survive a
fork) and the process id their files are named after.  Learning of the fork this way costs nothing per request, where
comparing ``os.getpid()`` on each use was a system call every time.
"""

from __future__ import annotations

import os
import weakref
from typing import Protocol


class ForgetsAtFork(Protocol):
    def forget_after_fork(self) -> None:
        """In a forked child: drop what the parent holds (connections, tallies) without using it."""


_OWNERS: weakref.WeakSet[ForgetsAtFork] = weakref.WeakSet()


def forget_after_fork(owner: ForgetsAtFork) -> None:
    """Call ``owner.forget_after_fork()`` in every process forked from this one, while ``owner`` lives."""
    _OWNERS.add(owner)


def _forget_all() -> None:
    for owner in list(_OWNERS):
        owner.forget_after_fork()


os.register_at_fork(after_in_child=_forget_all)
