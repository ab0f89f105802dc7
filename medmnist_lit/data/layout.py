"""What a data source must look like: its kind, which names are images, and where the class folders are.

A folder or zip source is a class-folder tree, ``<root>/<class>/<image>`` (like torchvision's ImageFolder),
optionally inside single wrapping folders. The same walk (:func:`resolve_class_root`) serves folders on disk
(:class:`DirNode`) and the tree spelled by a zip's member names (:class:`ZipNode`), so both report a bad
layout with the same messages. :class:`DataError` is raised for every malformed source, here and elsewhere.

Standard library only: everything else in the data layer imports this module.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Sequence
from operator import itemgetter
from pathlib import Path
from typing import Protocol

#: Extensions read as images (torchvision's ``IMG_EXTENSIONS``), compared case-insensitively.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"})
_EXTENSIONS_TEXT = sorted(IMAGE_EXTENSIONS)
_JUNK_NAMES = frozenset({"thumbs.db", "desktop.ini", "__macosx"})
#: What makes zip member names other than plain "<folder>/<file>" (see _plain_tree), in "\0"-joined names.
_NOT_PLAIN = ("\\", "\0\0", "//", "\0/", "/./", "/.\0", "\0./", "\0.\0", "/../", "/..\0", "\0../", "\0..\0")
_DRIVE = re.compile(r"\0[^\0]:")
#: "\0"-joined file names that are all images and none junk (is_image_name and not is_junk).
_ALL_IMAGES = re.compile(
    rf"(?:(?![.]|[rR][eE][aA][dD][mM][eE])[^\0]*\.(?:{'|'.join(e[1:] for e in sorted(IMAGE_EXTENSIONS))})(?:\0|\Z))*",
    re.IGNORECASE | re.ASCII,
)
_HINT_SOURCE = "--data.source PATH (a class-folder tree, a .zip of one, or a MedMNIST .npz)"
#: Remedy for a symlink that cannot be followed.
LINK_REMEDY = "remove or fix the link, or point --data.source elsewhere"


class DataError(ValueError):
    """A data source is missing, malformed or inconsistent; the message names the culprit and a fix."""


def is_junk(name: str) -> bool:
    """Whether a file or folder name is OS/archive clutter ignored silently (``.DS_Store``, ``README*``...)."""
    lower = name.lower()
    return name.startswith(".") or lower in _JUNK_NAMES or lower.startswith("readme") or lower.endswith(".txt")


def is_image_name(name: str) -> bool:
    """Whether a file name has an image extension and is not hidden (``._x.jpeg`` is AppleDouble junk)."""
    # Inlined extension test: called for every file, and os.path.splitext is several times slower.
    return name[:1] != "." and name[name.rfind(".") :].lower() in IMAGE_EXTENSIONS


def link_problem(path: str) -> str | None:
    """Why the symlink ``path`` cannot be followed (dangling, a loop), or ``None`` if it is no broken link."""
    try:
        target = os.readlink(path)
    except OSError:  # not a link, or gone
        return None
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"a symlink loop (it points to {target!r}, which leads back to itself)"
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return f"a dangling symlink (its target {target!r} does not exist)"
        return f"a symlink whose target {target!r} cannot be reached ({exc.strerror})"
    return None


def unreadable(path: str, exc: OSError) -> str:
    """One line on why ``path`` cannot be opened: a broken symlink named as such, else the OS's reason."""
    problem = link_problem(path)
    if problem:
        return f"{path!r} is {problem}; {LINK_REMEDY}"
    return f"cannot read {path!r}: {exc.strerror or exc}"


def check_options(channels: int, image_size: int | None) -> None:
    """Validate the conversion options shared by every reader."""
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise DataError(f"image_size must be a positive integer or None, got {image_size!r}")


def require_source(path: Path, option: str = "--data.source", what: str = "") -> None:
    """Raise the :class:`DataError` for a source path that does not exist, naming the ``option`` to change.

    Args:
        path: The path given.
        option: The option it came from (``--data.source``, ``--data.test_source``, ``--predict.source``).
        what: What that option takes, for the remedy (default: the training sources' forms).
    """
    if path.exists():
        return
    problem = link_problem(str(path))
    if problem:
        raise DataError(f"{option} {str(path)!r} is {problem}; remove or fix the link, or point {option} elsewhere")
    if option == "--data.source":
        raise DataError(
            f"data source {str(path)!r} does not exist; pass {_HINT_SOURCE}, "
            "or run `medmnist-lit download` to fetch Medical MNIST"
        )
    raise DataError(f"{option} {str(path)!r} does not exist; pass {option} PATH ({what})")


def source_kind(path: Path) -> str:
    """Classify an existing source path as ``"folder"``, ``"zip"`` or ``"npz"``."""
    require_source(path)
    if path.is_dir():
        return "folder"
    suffix = path.suffix.lower()
    if suffix in (".zip", ".npz"):
        return suffix[1:]
    raise DataError(
        f"unsupported data source file type {suffix or '(no extension)'!r} for {str(path)!r}; {_HINT_SOURCE}"
    )


class Node(Protocol):
    """One folder of a source's tree."""

    label: str  # path shown in messages, e.g. "medical_mnist/CXR/"

    def subdirs(self) -> dict[str, Node]:
        """Sub-folders by name (junk folders left out)."""
        ...

    def images(self) -> list[str]:
        """Sorted names of the image files directly in this folder."""
        ...


class DirNode:
    """A folder on disk, scanned lazily (names and ``d_type`` only; no ``stat``)."""

    def __init__(self, path: str, label: str = "") -> None:
        self.path, self.label = path, label
        self._scan: tuple[dict[str, Node], list[str]] | None = None

    def _entries(self) -> tuple[dict[str, Node], list[str]]:
        if self._scan is None:
            # Hot for 10k-file class folders: plain listdir (no DirEntry objects); only the few non-image
            # names are stat-ed to find sub-folders. A folder named like an image ("x.jpeg/") is listed as an
            # image and reported as unreadable when decoded. A broken symlink among the other names could be a
            # class folder, so it is an error rather than silently dropped (an image-named one fails its stat).
            images: list[str] = []
            others: list[str] = []
            for name in os.listdir(self.path):
                (images if is_image_name(name) else others).append(name)
            dirs: dict[str, Node] = {}
            for name in sorted(others):
                path = os.path.join(self.path, name)
                if is_junk(name):
                    continue
                if os.path.isdir(path):
                    dirs[name] = DirNode(path, f"{self.label}{name}/")
                elif problem := link_problem(path):
                    raise DataError(f"{path!r} is {problem}; {LINK_REMEDY}")
            images.sort()
            self._scan = (dirs, images)
        return self._scan

    def subdirs(self) -> dict[str, Node]:
        """Sub-folders by name (junk folders left out)."""
        return self._entries()[0]

    def images(self) -> list[str]:
        """Sorted names of the image files directly in this folder."""
        return self._entries()[1]


class ZipNode:
    """A folder of the tree spelled by a zip's member names."""

    def __init__(self, label: str = "") -> None:
        self.label = label
        self.dirs: dict[str, ZipNode] = {}
        self.files: dict[str, int] = {}  # image file name -> index of the member in the zip's central directory
        self._sorted: list[str] | None = None

    def subdirs(self) -> dict[str, Node]:
        """Sub-folders by name."""
        return dict(self.dirs)

    def images(self) -> list[str]:
        """Sorted names of the image members directly in this folder."""
        if self._sorted is None:  # set once the tree is built
            self._sorted = sorted(self.files)
        return self._sorted

    def child(self, part: str) -> ZipNode:
        """The sub-folder ``part``, created if new."""
        node = self.dirs.get(part)
        if node is None:
            node = self.dirs[part] = ZipNode(f"{self.label}{part}/")
        return node


def zip_tree(names: list[str], encrypted: Sequence[bool], source: str) -> ZipNode:
    r"""The folder tree spelled by a zip's member names; junk is left out, unsafe or ambiguous entries are errors.

    Each member's path is split on ``/`` (and ``\``), ignoring empty and ``.`` parts; a member under a junk
    name (:func:`is_junk`) is skipped, a directory entry or a non-image file only makes its folders. Errors, at
    the first culprit in archive order: an absolute path or ``..`` (zip-slip), an encrypted image, an image
    listed twice.

    Args:
        names: Member names (``ZipInfo.filename``), in archive order.
        encrypted: Whether each member is encrypted (flag bit 0).
        source: The zip's path, for messages.
    """
    if not any(encrypted):
        tree = _plain_tree(names)
        if tree is not None:
            return tree
    return _any_tree(names, encrypted, source)


def _any_tree(names: list[str], encrypted: Sequence[bool], source: str) -> ZipNode:
    """:func:`zip_tree` for any names, one member at a time (the reference for :func:`_plain_tree`)."""
    top = ZipNode()
    for index, filename in enumerate(names):
        name = filename.replace("\\", "/")
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if name.startswith("/") or (len(name) > 1 and name[1] == ":") or ".." in parts:
            raise DataError(
                f"zip entry {filename!r} in {source!r} points outside the archive's folder tree "
                "(absolute path or '..'); refusing to read this archive"
            )
        if not parts or any(is_junk(p) for p in parts):
            continue
        is_dir = filename.endswith("/")  # ZipInfo.is_dir()
        node = top
        for part in parts if is_dir else parts[:-1]:
            node = node.child(part)
        if is_dir or not is_image_name(parts[-1]):
            continue
        if encrypted[index]:
            raise DataError(f"zip entry {filename!r} in {source!r} is encrypted, which is not supported")
        if parts[-1] in node.files:
            raise DataError(f"zip entry {filename!r} appears twice in {source!r}")
        node.files[parts[-1]] = index
    return top


def _plain_tree(names: list[str]) -> ZipNode | None:
    r""":func:`zip_tree` for plain names, folder by folder rather than member by member; ``None`` for other names.

    Plain: no ``\``, no empty, ``.`` or ``..`` part, no drive letter, no member listed twice. Then each
    member is ``<folder>/<file>`` with one folder per distinct prefix, so the checks run once per folder and the
    files of a folder are sorted and classified together (a regular expression over all their names, per-file
    checks only for folders that hold something else than images). A tenth of :func:`_any_tree`'s time on
    Medical MNIST's 58,960 members.
    """
    joined = "\0" + "\0".join(names) + "\0"
    if any(bad in joined for bad in _NOT_PLAIN) or (":" in joined and _DRIVE.search(joined)):
        return None
    folders: dict[str, list[int]] = {}
    for index, name in enumerate(names):
        prefix = name[: name.rfind("/") + 1]
        members = folders.get(prefix)
        if members is None:
            folders[prefix] = [index]
        else:
            members.append(index)
    top = ZipNode()
    for prefix, indices in folders.items():
        parts = prefix.split("/")[:-1]
        if any(is_junk(p) for p in parts):
            continue
        full = itemgetter(*indices)(names) if len(indices) > 1 else (names[indices[0]],)
        # "\0<prefix><file>" -> "\0<file>": a prefix ends with "/", which no file name holds, so only prefixes go.
        files = "\0".join(full).replace("\0" + prefix, "\0")[len(prefix) :].split("\0")
        by_name = dict(zip(files, indices, strict=True))
        folder_entries = files.count("")  # the folder's own directory entry, "<prefix>"
        by_name.pop("", None)
        if len(by_name) != len(files) - folder_entries:
            return None  # a name listed twice: the member-by-member walk reports it if it matters
        ordered = sorted(by_name)
        images = by_name
        if _ALL_IMAGES.fullmatch("\0".join(ordered)) is None:  # something else than images: file by file
            ordered = [f for f in ordered if not is_junk(f) and is_image_name(f)]
            images = {f: by_name[f] for f in ordered}
            if not folder_entries and all(is_junk(f) for f in by_name):
                continue  # only junk here: as member by member, it makes no folder
        node = top
        for part in parts:
            node = node.child(part)
        node.files, node._sorted = images, ordered
    return top


def find_class_root(top: Node) -> Node:
    """Find the folder whose sub-folders are the classes, descending through single wrapping folders.

    A level is a wrapper when it holds no images and exactly one folder which itself holds folders
    (``medical_mnist/AbdomenCT/...``). A single folder of images is a single class (an error later).
    """
    node = top
    for _ in range(4):
        subdirs = node.subdirs()
        if len(subdirs) == 1 and not node.images():
            (only,) = subdirs.values()
            if only.subdirs():
                node = only
                continue
        break
    return node


def resolve_class_root(top: Node, source: str) -> tuple[Node, list[str]]:
    """Find and validate the class root below ``top``; returns it and the sorted class names."""
    node = find_class_root(top)
    if node.images():
        raise DataError(
            f"{node.label}{node.images()[0]} in {source} is an image outside a class folder; the layout must be "
            f"<root>/<class>/<image> with one sub-folder per class (like torchvision's ImageFolder)"
        )
    classes = sorted(node.subdirs())
    if not classes:
        raise DataError(f"no class folders in {source}: the dataset is empty (expected <root>/<class>/<image>)")
    for name in classes:
        cls = node.subdirs()[name]
        nested = cls.subdirs()
        if nested:
            first = sorted(nested)[0]
            raise DataError(
                f"{_first_entry(nested[first])} in {source} lies in a sub-folder of class folder "
                f"{cls.label!r}; images must sit directly in the class folders (<root>/<class>/<image>)"
            )
        if not cls.images():
            raise DataError(
                f"class folder {cls.label!r} in {source} has no images (extensions: {' '.join(_EXTENSIONS_TEXT)})"
            )
    if len(classes) < 2:
        raise DataError(
            f"only one class ({classes[0]!r}) in {source}; a classifier needs at least two class folders "
            f"(point the source at the folder that holds the class folders)"
        )
    return node, classes


def _first_entry(node: Node) -> str:
    """The first image path below ``node`` (or the folder itself) for error messages."""
    images = node.images()
    if images:
        return node.label + images[0]
    subdirs = node.subdirs()
    return _first_entry(subdirs[sorted(subdirs)[0]]) if subdirs else node.label
