"""The one base error of the project; each package defines subclasses named by condition."""


class PubsubCacheError(Exception):
    """Raised for every condition the project itself detects and can explain.

    Subclasses build their own message from what they carry (position, service, node, item id),
    so that a user reading one line knows what is wrong and where.
    """
