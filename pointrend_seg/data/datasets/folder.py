"""Semantic segmentation datasets given as two folders: images and label masks paired by file stem.

::

    IMAGE_DIR/0001.jpg   MASK_DIR/0001.png   (one channel: class ids 0..K-1, or the ignore label)
    IMAGE_DIR/0002.jpg   MASK_DIR/0002.png

Python: :func:`register_folder_dataset`; command line: ``--register-folder NAME IMAGE_DIR
MASK_DIR CLASSES`` (repeatable; ``--label-map 255:1`` / ``--ignore-value V`` after it), as in
README.md ("Your own data") and docs/dataset_check.md.

Folders are not searched recursively; images are the files with an extension of
``IMAGE_EXTENSIONS`` (a GIF: its first frame), other files are left out with a warning. Masks
are single-channel (8/16-bit grayscale, or palette PNG whose indices are the class ids); the
mapper rejects colour-coded RGB masks. ``label_map`` ({stored value: class id}) maps mask values
whenever they are read. Registration checks the arguments and the folders; the folders are
listed on ``DatasetCatalog.get(name)``. An image without a mask keeps the path its mask should
have (a warning counts them), so that the dataset check lists each; masks without an image are
skipped with a warning.
"""
import codecs
import logging
import os
from collections import Counter, defaultdict

from ...config import shorten
from ..readers import BadInputError, same_stem_hint
from ..label_map import format_label_map, parse_label_map
from .common import default_stuff_colors, register_sem_seg_dataset

__all__ = ["IMAGE_EXTENSIONS", "load_folder_pairs", "parse_class_names", "register_folder_dataset",
           "register_folder_datasets"]

logger = logging.getLogger(__name__)

# Image file extensions considered when ``image_ext`` is None (compared case-insensitively).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm",
                    ".gif")


def _normalize_ext(ext):
    ext = ext.lower()
    return ext if ext.startswith(".") else "." + ext


def _list_by_stem(folder, extensions, what, dataset_name, others=None):
    """{stem: path} of the files in ``folder`` whose extension is in ``extensions``; the names
    of its other files are appended to the list ``others`` (if given)."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"dataset {dataset_name!r}: {what} folder not found: {folder}")
    by_stem = defaultdict(list)
    for entry in os.listdir(folder):
        stem, ext = os.path.splitext(entry)
        if not os.path.isfile(os.path.join(folder, entry)):
            continue
        if ext.lower() in extensions:
            by_stem[stem].append(entry)
        elif others is not None:
            others.append(entry)
    duplicates = {stem: names for stem, names in by_stem.items() if len(names) > 1}
    if duplicates:
        stem, names = sorted(duplicates.items())[0]
        raise ValueError(
            f"dataset {dataset_name!r}: {len(duplicates)} {what} file stems are ambiguous in "
            f"{folder}, e.g. {sorted(names)}; keep one file per stem or pass the extension"
        )
    return {stem: os.path.join(folder, names[0]) for stem, names in by_stem.items()}


def _subfolder_hint(folder, extensions) -> str:
    """For an image folder without images: its subfolders, and the first that holds images."""
    try:
        subfolders = sorted(e.name for e in os.scandir(folder) if e.is_dir())
    except OSError:
        return ""
    if not subfolders:
        return ""
    with_images = [
        name for name in subfolders[:50]
        if any(os.path.splitext(f)[1].lower() in extensions
               for f in os.listdir(os.path.join(folder, name)))
    ]
    hint = f"; it holds the folder(s) {', '.join(subfolders[:5])}"
    hint += " ..." if len(subfolders) > 5 else ""
    if with_images:
        return hint + (f": give the folder of the images itself, e.g. "
                       f"{os.path.join(folder, with_images[0])} (folders are not searched "
                       "recursively)")
    return hint + " and no images (folders are not searched recursively)"


def load_folder_pairs(image_dir, mask_dir, image_ext=None, mask_ext=".png", dataset_name=None):
    """Pair ``image_dir/STEM.<image_ext>`` with ``mask_dir/STEM<mask_ext>``.

    Args:
        image_dir, mask_dir (str): the two folders (may be the same if the extensions differ).
        image_ext (str or None): e.g. ".jpg"; None: any of ``IMAGE_EXTENSIONS``.
        dataset_name (str): only used in messages.

    Returns:
        list[dict]: ``file_name``, ``sem_seg_file_name``, ``image_id`` (the stem), sorted by stem;
        an image without a mask gets the path its mask should have.

    Raises:
        FileNotFoundError: a folder is missing.
        BadInputError: ("empty dataset") no images in ``image_dir`` (naming its subfolders).
        ValueError: two images (masks) share a stem.
    """
    image_exts = IMAGE_EXTENSIONS if image_ext is None else (_normalize_ext(image_ext),)
    mask_exts = (_normalize_ext(mask_ext),)
    if os.path.normpath(image_dir) == os.path.normpath(mask_dir):
        image_exts = tuple(e for e in image_exts if e not in mask_exts)
        if not image_exts:
            raise ValueError(
                f"dataset {dataset_name!r}: images and masks share the folder {image_dir} and the "
                f"extension {mask_ext!r}; they cannot be told apart"
            )
    others = []
    images = _list_by_stem(image_dir, image_exts, "image", dataset_name, others)
    masks = _list_by_stem(mask_dir, mask_exts, "mask", dataset_name)
    if not images:
        raise BadInputError(
            f"dataset {dataset_name!r} is empty: no images with extension "
            f"{'/'.join(image_exts)} in {image_dir}" + _subfolder_hint(image_dir, image_exts),
            "empty dataset", image_dir)
    if os.path.normpath(image_dir) == os.path.normpath(mask_dir):
        others = [f for f in others if os.path.splitext(f)[1].lower() not in mask_exts]
    if others:
        counts = Counter(os.path.splitext(f)[1].lower() or "no extension" for f in others)
        logger.warning(
            "dataset %r: %d file(s) in %s are left out, their extension is not an image's (%s): "
            "%s; e.g. %s", dataset_name, len(others), image_dir, "/".join(image_exts),
            ", ".join(f"{ext} x{n}" for ext, n in sorted(counts.items())), sorted(others)[0])
    missing = sorted(set(images) - set(masks))
    if missing:
        # Kept, so that the dataset check lists every one (and --skip-bad trains on the rest).
        expected = os.path.join(mask_dir, missing[0] + mask_exts[0])
        logger.warning(
            "dataset %r: %d of %d images in %s have no mask in %s; first: image %r (stem %r) "
            "expects %r%s", dataset_name, len(missing), len(images), image_dir, mask_dir,
            os.path.basename(images[missing[0]]), missing[0], missing[0] + mask_exts[0],
            same_stem_hint(expected),
        )
        masks.update({stem: os.path.join(mask_dir, stem + mask_exts[0]) for stem in missing})
    extra = set(masks) - set(images)
    if extra:
        logger.warning(
            "dataset %r: %d masks in %s have no image in %s and are skipped (e.g. %s)",
            dataset_name, len(extra), mask_dir, image_dir, sorted(extra)[0],
        )
    return [
        {"file_name": images[stem], "sem_seg_file_name": masks[stem], "image_id": stem}
        for stem in sorted(images)
    ]


# Largest class-names file read: a file is read no further, so a wrong path costs nothing.
MAX_CLASS_NAMES_FILE_BYTES = 4 << 20


def _class_names_text(path, data: bytes) -> str:
    """The text of the class-names file ``path`` (its bytes ``data``): UTF-8, or UTF-16 with a
    byte-order mark (Notepad's "Unicode"; no UTF-8 text starts with FF FE / FE FF). Anything else
    is a ValueError naming the file."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) and not data.startswith(
            codecs.BOM_UTF32_LE):
        encoding = "utf-16"
    else:
        encoding = "utf-8-sig"
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as e:
        name = "UTF-16" if encoding == "utf-16" else "UTF-8"
        raise ValueError(
            f"class names file {path} is not {name} text (byte {data[e.start:e.start + 1].hex()} "
            f"at offset {e.start}: {e.reason}); save it as UTF-8"
            + (" (Latin-1 / Windows-1252 letters such as an accented e are not UTF-8)"
               if name == "UTF-8" else "")) from None
    if "\0" in text:
        raise ValueError(
            f"class names file {path} holds NUL characters (offset {text.index(chr(0))}): not "
            "UTF-8 text (UTF-16 without a byte-order mark? UTF-32? a binary file?); save it as "
            "UTF-8")
    return text


def parse_class_names(spec):
    """Class names from a list/tuple of names, or a string: the path of an existing text file
    with one name per line (UTF-8, or UTF-16 with a byte-order mark), else comma-separated names.

    In a file, class id = the position among its non-blank lines, names stripped. A line starting
    with '#' is refused: as a comment or as a name, it would shift the later ids of a file that
    means the other.

    Raises:
        ValueError: empty, blank or duplicate names; a file too large, not UTF-8 / UTF-16, or
            with a '#' line (naming it).
        FileNotFoundError: a string that looks like a file path (ends with .txt or holds a path
            separator) but is missing.
    """
    if isinstance(spec, (str, os.PathLike)):
        spec = os.fspath(spec)
        if os.path.isfile(spec):
            with open(spec, "rb") as f:
                data = f.read(MAX_CLASS_NAMES_FILE_BYTES + 1)
            if len(data) > MAX_CLASS_NAMES_FILE_BYTES:
                raise ValueError(f"class names file {spec} is larger than "
                                 f"{MAX_CLASS_NAMES_FILE_BYTES >> 20} MiB: not a list of names")
            lines = [line.strip() for line in _class_names_text(spec, data).splitlines()]
            hashed = next((i for i, line in enumerate(lines) if line.startswith("#")), None)
            if hashed is not None:
                raise ValueError(
                    f"class names file {spec}, line {hashed + 1}: "
                    f"{shorten(repr(lines[hashed]), 200)} starts with '#'. Every non-blank line "
                    "names the next class id, and such a line could be a comment (skipping it "
                    "shifts every later id by one) or a name, so it is refused rather than "
                    "guessed: remove it if it is a comment, rename the class if not")
            names = [n for n in lines if n]
            source = f"class file {spec}"
        elif spec.endswith(".txt") or os.sep in spec or (os.altsep and os.altsep in spec):
            raise FileNotFoundError(f"class names file not found: {spec}")
        else:
            names = [n.strip() for n in spec.split(",")]
            source = f"class list {shorten(repr(spec), 200)}"
    else:
        names = [str(n).strip() for n in spec]
        source = f"class list {shorten(repr(names), 200)}"
    if not names:
        raise ValueError(f"{source} has no class names")
    if not all(names):
        raise ValueError(f"{source} has an empty class name (class id {names.index('')})")
    counts = Counter(names)
    duplicates = sorted(n for n, c in counts.items() if c > 1)
    if duplicates:
        raise ValueError(f"{source} has duplicate class names: {shorten(repr(duplicates), 200)}")
    return names


def register_folder_dataset(name, image_dir, mask_dir, class_names, ignore_label=255,
                            image_ext=None, mask_ext=".png", stuff_colors=None, label_map=None):
    """Register a semantic segmentation dataset of images and masks paired by file stem.

    Args:
        name (str): dataset name; must not be registered yet.
        image_dir, mask_dir, image_ext, mask_ext: as in :func:`load_folder_pairs`.
        class_names (list[str] or str): index = class id; see :func:`parse_class_names`.
        ignore_label (int): mask value ignored by loss and evaluation; not a class id.
        stuff_colors (list[tuple[int, int, int]] or None): RGB per class; None: Detectron2's.
        label_map (dict[int, int] or str or None): stored mask value -> class id (or
            ``ignore_label``), e.g. ``{255: 1}`` or "255:1"
            (:mod:`pointrend_seg.data.label_map`).

    Returns:
        str: ``name``.

    Raises:
        FileNotFoundError: a folder does not exist (now, or when loading).
        ValueError: bad arguments or name already registered; when loading, as
            :func:`load_folder_pairs`.
    """
    from detectron2.data import DatasetCatalog

    class_names = parse_class_names(class_names)
    if name in DatasetCatalog.list():
        raise ValueError(f"dataset {name!r} is already registered")
    if 0 <= ignore_label < len(class_names):
        raise ValueError(
            f"dataset {name!r}: ignore_label={ignore_label} is the id of class "
            f"{class_names[ignore_label]!r}; use a value outside [0, {len(class_names)})"
        )
    label_map = parse_label_map(label_map)
    unusable = {v: c for v, c in (label_map or {}).items()
                if not 0 <= c < len(class_names) and c != ignore_label}
    if unusable:
        raise ValueError(
            f"dataset {name!r}: label_map {format_label_map(label_map)!r} maps to "
            f"{sorted(set(unusable.values()))}, neither a class id (0..{len(class_names) - 1}) "
            f"nor the ignore label {ignore_label}"
        )
    if stuff_colors is None:
        stuff_colors = default_stuff_colors(len(class_names))
    if len(stuff_colors) != len(class_names) or any(len(c) != 3 for c in stuff_colors):
        raise ValueError(
            f"dataset {name!r}: stuff_colors must hold one RGB triple per class "
            f"({len(class_names)}), got {len(stuff_colors)}"
        )
    image_dir, mask_dir = os.fspath(image_dir), os.fspath(mask_dir)
    for what, folder in (("image", image_dir), ("mask", mask_dir)):
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"dataset {name!r}: {what} folder not found: {folder}")

    return register_sem_seg_dataset(
        name,
        lambda: load_folder_pairs(image_dir, mask_dir, image_ext, mask_ext, dataset_name=name),
        stuff_classes=class_names, stuff_colors=stuff_colors, ignore_label=ignore_label,
        image_root=image_dir, sem_seg_root=mask_dir, label_map=label_map,
    )


def register_folder_datasets(specs):
    """Register one folder dataset per spec (``--register-folder``'s values): ``(name, image_dir,
    mask_dir, classes)``, optionally followed by a dict of keyword arguments of
    :func:`register_folder_dataset`. Returns the names."""
    return [register_folder_dataset(*spec[:-1], **spec[-1]) if spec and isinstance(spec[-1], dict)
            else register_folder_dataset(*spec) for spec in map(list, specs or [])]
