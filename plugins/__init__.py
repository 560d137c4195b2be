"""Optional object stores, registered through the ``framework.stores`` entry-point group.

* ``memory`` - :class:`framework_plugins.memory.MemoryStore`: this process's memory, thread-safe.
* ``file`` - :class:`framework_plugins.file.FileStore`: a directory shared by processes or hosts.
"""

from __future__ import annotations

import logging

logging.getLogger(__name__).addHandler(logging.NullHandler())
