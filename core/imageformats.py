"""Image formats pingo keeps: the one list the crawler and the dataset factory both check.

Only these are ever handed to a decoder. Pillow knows more (EPS runs Ghostscript on the
bytes, and others are rarely exercised), and a crawled body is remote, untrusted data.
"""

from __future__ import annotations

# Formats a training pipeline reads back without surprises (Pillow format names).
ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "MPO"})

# File extension for each allowed format.
EXTENSIONS = {
    "JPEG": "jpg",
    "PNG": "png",
    "GIF": "gif",
    "WEBP": "webp",
    "BMP": "bmp",
    "TIFF": "tiff",
    "MPO": "jpg",
}

# How each allowed format's files begin: a body that starts otherwise is not an image of
# ours at all (not_image); one that starts so but does not decode is damaged (corrupt).
_SIGNATURES = (
    b"\xff\xd8\xff",
    b"\x89PNG\r\n\x1a\n",
    b"GIF87a",
    b"GIF89a",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
)


def looks_like_allowed(head: bytes) -> bool:
    """Does ``head`` (a body's first bytes) start like a file of an allowed format?"""
    return head.startswith(_SIGNATURES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")
