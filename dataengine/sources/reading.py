"""Reading the media bytes (or the path) of a listed sample; tar members by byte offset, never extracted."""
from __future__ import annotations

import os
import stat

from .common import MediaError, SampleRef


def read_media(ref: SampleRef, max_bytes: int = 2_000_000_000) -> bytes:
    """The exact media bytes of ``ref``; ``MediaError`` when they cannot be had."""
    if ref.error:
        raise MediaError(f"{ref.key}: sample is marked bad: {ref.error}")
    if not ref.uri:
        raise MediaError(f"{ref.key}: sample has no media")
    if ref.offset >= 0:
        return _read_member(ref, max_bytes)
    path = ref.uri
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise MediaError(f"media is not a regular file: {path}")
        if st.st_size > max_bytes:
            raise MediaError(f"media too large: {st.st_size} bytes > limit {max_bytes}: {path}")
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)   # the file may grow after stat
    except FileNotFoundError:
        raise MediaError(f"media file not found: {path}") from None
    except OSError as e:
        raise MediaError(f"cannot read media {path}: {e.strerror or e}") from None
    if len(data) > max_bytes:
        raise MediaError(f"media too large: more than {max_bytes} bytes: {path}")
    if ref.size >= 0 and len(data) != ref.size:
        raise MediaError(f"short read: media changed since listing ({ref.size} bytes listed, {len(data)} read): {path}")
    return data


def media_path(ref: SampleRef, max_bytes: int = 2_000_000_000) -> str:
    """The path of a plain-file sample, checked as ``read_media`` checks it, not read.

    Video decoders stream from it, so a worker's memory does not grow with the
    file. ``MediaError`` for a tar member (no path of its own) or a bad file.
    """
    if ref.error:
        raise MediaError(f"{ref.key}: sample is marked bad: {ref.error}")
    if not ref.uri or ref.offset >= 0 or not os.path.isabs(ref.uri):
        raise MediaError(f"{ref.key}: media is not a plain file with an absolute path: {ref.uri}")
    path = ref.uri
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise MediaError(f"media file not found: {path}") from None
    except OSError as e:
        raise MediaError(f"cannot read media {path}: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise MediaError(f"media is not a regular file: {path}")
    if st.st_size > max_bytes:
        raise MediaError(f"media too large: {st.st_size} bytes > limit {max_bytes}: {path}")
    if ref.size >= 0 and st.st_size != ref.size:
        raise MediaError(f"short read: media changed since listing ({ref.size} bytes listed, "
                         f"{st.st_size} now): {path}")
    return path


def _read_member(ref: SampleRef, max_bytes: int) -> bytes:
    # The uri is "TAR#MEMBER" and either side may contain '#': the tar is the
    # first prefix that is an existing file. The bytes come from offset/size.
    cuts = [i for i, c in enumerate(ref.uri) if c == "#"]
    tar = next((ref.uri[:i] for i in cuts if os.path.isfile(ref.uri[:i])), None)
    if tar is None:
        raise MediaError(f"tar file not found for {ref.uri}")
    if ref.size < 0:
        raise MediaError(f"tar member without a size: {ref.uri}")
    if ref.size > max_bytes:
        raise MediaError(f"media too large: {ref.size} bytes > limit {max_bytes}: {ref.uri}")
    try:
        with open(tar, "rb") as f:
            f.seek(ref.offset)
            data = f.read(ref.size)
    except OSError as e:
        raise MediaError(f"cannot read {ref.uri}: {e.strerror or e}") from None
    if len(data) != ref.size:
        raise MediaError(f"short read: got {len(data)} of {ref.size} bytes at offset {ref.offset} of {tar}")
    return data
