"""The proxies of stored objects: :mod:`framework.proxy`, under the store package's name.

This module does no I/O and imports no Redis code.
"""

from __future__ import annotations

from framework.proxy import Proxy, extract, get_factory, is_proxy, is_resolved, resolve

__all__ = ["Proxy", "extract", "get_factory", "is_proxy", "is_resolved", "resolve"]
