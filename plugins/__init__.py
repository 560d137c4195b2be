"""Optional object stores, registered through the ``framework.stores`` entry-point group.

* ``memory`` - :class:`plugins.memory.MemoryStore`: this process's memory, thread-safe.
* ``file`` - :class:`plugins.file.FileStore`: a directory shared by processes or hosts.
"""

from __future__ import annotations
