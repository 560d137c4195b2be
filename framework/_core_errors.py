"""The root of the error tree and the branches the bottom layers raise (pure, no I/O).

Settings, Redis, serializers, framing and authentication raise these. They are
re-exported by :mod:`framework.exceptions`, which draws the whole tree and defines the
branches of the object store and of object and byte streams, and ``ClosedError``;
import them from there.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationFailed",
    "BackendError",
    "BackendTimeout",
    "BackendUnavailable",
    "BadSignatureError",
    "ChecksumError",
    "ConfigurationError",
    "DeserializationError",
    "EncryptionError",
    "FrameworkError",
    "FramingError",
    "MalformedFrameError",
    "MissingSignatureError",
    "PermissionDenied",
    "SecurityError",
    "SequenceError",
    "SerializationError",
    "TruncatedFrameError",
    "UnsupportedVersionError",
]


class FrameworkError(Exception):
    """Root of every exception raised by the framework."""


class ConfigurationError(FrameworkError, ValueError):
    """Settings, a URL or an argument combination is invalid."""


class BackendError(FrameworkError):
    """Redis returned an error or the client failed.

    Attributes:
        command: The Redis command that failed, when known.
    """

    def __init__(self, message: str, *, command: str | None = None) -> None:
        super().__init__(message)
        self.command = command


class BackendUnavailable(BackendError):
    """Redis cannot be reached or the connection dropped."""


class BackendTimeout(BackendError):
    """Redis did not answer within the socket timeout."""


class AuthenticationFailed(BackendError):
    """Redis refused the user name or password, or needs credentials and got none."""


class PermissionDenied(BackendError):
    """The ACL user may not run a command, or may not touch one of its keys or channels."""


class SerializationError(FrameworkError):
    """An object could not be serialized."""


class DeserializationError(SerializationError):
    """Bytes could not be turned back into an object."""


class FramingError(FrameworkError):
    """A frame or chunk is malformed."""


class TruncatedFrameError(FramingError):
    """A frame holds fewer bytes than its header announces."""


class UnsupportedVersionError(FramingError):
    """A frame carries a wire version this build does not understand."""


class ChecksumError(FramingError):
    """A chunk's checksum does not match its bytes."""


class SequenceError(FramingError):
    """A chunk is missing, duplicated or out of order."""


class MalformedFrameError(FramingError):
    """A frame or control entry lacks a required field or does not parse."""


class SecurityError(FrameworkError):
    """A payload failed authentication or cannot be protected."""


class MissingSignatureError(SecurityError):
    """Unsigned data reached a receiver configured with a shared secret."""


class BadSignatureError(SecurityError):
    """A payload's MAC does not match: it was altered or signed with another secret."""


class EncryptionError(SecurityError):
    """Encryption is unavailable, its key is missing, or decryption failed."""


# Their public home, as httpx does for its façade: tracebacks, pickles and error
# trackers name them framework.exceptions.<name>, wherever they are defined.
for _name in __all__:
    globals()[_name].__module__ = "framework.exceptions"


def reworded(error: FrameworkError, message: str) -> FrameworkError:
    """An error of ``error``'s type saying ``message`` (``error`` itself if it cannot be).

    Its attributes (a ``BackendError``'s ``command``, say) are ``error``'s.
    """
    try:
        new = type(error)(message)
    except TypeError:  # an error type whose constructor takes more: keep it as it is
        return error
    vars(new).update(vars(error))
    return new
