"""Every reason an update is refused, as its own type (tests and callers tell them apart).

All are permanent: retrying the same files gives the same answer. Messages say what was checked,
in which file, and what was expected against what was found.
"""

from anklume.errors import PermanentError, TemporaryError


class UpdateRefused(PermanentError):
    """Base of every refusal: nothing has been written to the system when it is raised."""


class ManifestInvalid(UpdateRefused):
    """The manifest is not a document this client understands (syntax, fields, names)."""


class ManifestSignatureInvalid(UpdateRefused):
    pass


class Incompatible(UpdateRefused):
    """Unknown format, another product, or a disk layout this OS does not have."""


class VersionRefused(UpdateRefused):
    """Not newer than the running version, below the update's minimum, or failed before."""


class FileMismatch(UpdateRefused):
    """A file's size or SHA-256 differs from the signed manifest."""


class TruncatedDownload(FileMismatch):
    pass


class VeritySignatureInvalid(UpdateRefused):
    """The usr-verity-sig partition does not carry a root hash signed by the update key."""


class PartitionUuidMismatch(UpdateRefused):
    """A partition UUID is not the one its root hash derives (usrhash= would not find it)."""


class UkiSignatureInvalid(UpdateRefused):
    pass


class UsrHashMismatch(UpdateRefused):
    """The UKI would boot another /usr than the signed root hash."""


class SourceUnavailable(TemporaryError):
    """The update source cannot be reached or read now (network, stick not plugged in)."""


class PublishRefused(PermanentError):
    pass


class ApplyRefused(PermanentError):
    pass


class MissingFile(UpdateRefused):
    """A file the manifest lists is not in the update source."""
