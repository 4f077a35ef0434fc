"""Reading a file of the capture folder: only a regular file inside it, bounded, never blocking.

A name in the capture folder is input from outside, and by the time a file is read it may
have been swapped for a symbolic link (to a 1.5 GiB file elsewhere), a FIFO (a read that
never returns) or a device. So a file is opened one path component at a time from the
folder itself, with O_NOFOLLOW (no link is followed, not even a folder on the way) and
O_NONBLOCK (opening a FIFO returns at once); then the open file is fstat'ed and only a
regular file is read, at most max_frame_bytes + 1 bytes of it.

Hard links are read. A hard link to a file elsewhere cannot be told from a file written in
the folder (st_nlink > 1 also fits a second link made inside it), and it exposes nothing
its maker could not read already: Linux (fs.protected_hardlinks = 1, the default) lets a
user hard-link only files they own or may read and write.

Relative paths are kept escaped (schemas.names): the escaped form is valid text for the
state database, logs and MQTT, and turns back into the exact bytes of the name here.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Literal

from framewire.edge_agents.capture.inspect import FrameRejectedError, ImageLimits, read_fd
from framewire.schemas import ErrorKind
from framewire.schemas.names import escape_name, unescape_name

FileKind = Literal["file", "symlink", "fifo", "socket", "device", "directory", "other"]

_KIND_WORDS: dict[FileKind, str] = {
    "file": "a regular file",
    "symlink": "a symbolic link",
    "fifo": "a FIFO (named pipe)",
    "socket": "a socket",
    "device": "a device",
    "directory": "a folder",
    "other": "an unknown kind of file",
}


def kind_of(mode: int) -> FileKind:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "other"


def not_a_file(kind: FileKind) -> FrameRejectedError:
    return FrameRejectedError(
        ErrorKind.NOT_A_FILE,
        f"it is {_KIND_WORDS[kind]}: only regular files inside the capture folder are read "
        "(links are never followed)",
    )


def relpath_of(root: Path, path: Path) -> str:
    """The escaped path of `path` relative to `root` (ValueError when it is not under it)."""
    return escape_name(path.relative_to(root).as_posix())


def path_of(root: Path, relpath: str) -> Path:
    """The file an escaped relative path names."""
    return root / os.fsdecode(unescape_name(relpath))


def _parts(relpath: str) -> list[bytes]:
    parts = unescape_name(relpath).split(b"/")
    if any(p in (b"", b".", b"..") for p in parts):
        raise FrameRejectedError(ErrorKind.NOT_A_FILE, "its path leaves the capture folder")
    return parts


def _unreadable(err: OSError, what: str) -> FrameRejectedError:
    if err.errno in (errno.EACCES, errno.EPERM):
        return FrameRejectedError(
            ErrorKind.UNREADABLE,
            f"{what} cannot be read: permission denied (the capture agent's user needs read "
            "access; it is looked at again once its permissions change)",
        )
    return FrameRejectedError(
        ErrorKind.UNREADABLE, f"{what} cannot be read: {err.strerror or err} (errno {err.errno})"
    )


def open_in_folder(root: Path, relpath: str) -> int:
    """Open the file at `relpath` under `root` for reading without following any link and
    without blocking; FileNotFoundError when it is gone, FrameRejectedError otherwise."""
    parts = _parts(relpath)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            try:
                inner = os.open(
                    part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd
                )
            except OSError as err:
                if err.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise FrameRejectedError(
                        ErrorKind.NOT_A_FILE,
                        "a folder on its path is now a symbolic link or not a folder: only "
                        "files inside the capture folder are read",
                    ) from None
                if isinstance(err, FileNotFoundError):
                    raise
                raise _unreadable(err, "a folder on its path") from None
            os.close(fd)
            fd = inner
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
        try:
            return os.open(parts[-1], flags, dir_fd=fd)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise not_a_file("symlink") from None
            if isinstance(err, FileNotFoundError):
                raise
            raise _unreadable(err, "the file") from None
    finally:
        os.close(fd)


def read_in_folder(
    root: Path, relpath: str, limits: ImageLimits, *, expect_size: int | None = None
) -> bytes:
    """The bytes of a regular file inside `root`, read as `open_in_folder` explains.

    With `expect_size`, a file whose size is no longer that is refused before it is read."""
    fd = open_in_folder(root, relpath)
    try:
        st = os.fstat(fd)
        kind = kind_of(st.st_mode)
        if kind != "file":
            raise not_a_file(kind)
        if expect_size is not None and st.st_size != expect_size:
            raise FrameRejectedError(
                ErrorKind.SOURCE_CHANGED,
                f"its size changed from {expect_size} to {st.st_size} bytes",
            )
        try:
            return read_fd(fd, limits)
        except OSError as err:
            raise _unreadable(err, "the file") from None
    finally:
        os.close(fd)
