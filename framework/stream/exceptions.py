"""ProxyStore's ``proxystore.stream.exceptions``: the errors of object streams.

They live in :mod:`framework.exceptions` with every other framework error; this module
keeps ProxyStore's import path working.
"""

from __future__ import annotations

from framework.exceptions import TopicClosedError

__all__ = ["TopicClosedError"]
