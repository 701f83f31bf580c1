"""
The whole-dataset check (pointrend_seg/data/dataset_check.py, tools/check_dataset.py) and label
maps for folder datasets: every problem with its file in one run, histograms against counts
made here from the files, the cache (a second check reads nothing), warnings with their fixes.
"""
import errno
import importlib.util
import json
import logging
import os

import numpy as np
import pytest
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog

from pointrend_seg.data import (
    BadInputError,
    SemSegDatasetMapper,
    apply_label_map,
    parse_label_map,
)
from pointrend_seg.data import dataset_check
from pointrend_seg.data.dataset_check import (
    DatasetCheckError,
    check_dataset,
    check_dataset_dicts,
    raise_dataset_problems,
)
from pointrend_seg.data.datasets import register_folder_dataset, register_folder_datasets
from pointrend_seg.engine.cli import (OutputIsInputError, ToolUsageError,
                                     add_register_folder_argument, run_tool)

from bad_dataset import BAD_KINDS, CLASSES, write_bad_folder, write_binary_folder
from conftest import REPO_ROOT


def _mask_counts(mask_dir, stems, num_classes=2, label_map=None):
    """Pixels per class and ignored pixels, counted from the mask files directly."""
    pixels, ignored = np.zeros(num_classes, np.int64), 0
    for stem in stems:
        stored = np.asarray(Image.open(os.path.join(mask_dir, f"{stem}.png"))).astype(np.int64)
        mask = stored.copy()
        for value, class_id in (label_map or {}).items():
            mask[stored == value] = class_id
        pixels += np.bincount(mask[mask < num_classes], minlength=num_classes)
        ignored += int((mask == 255).sum())
    return pixels, ignored


def _check(name, tmp_path, **kwargs):
    return check_dataset(name, cache_dir=str(tmp_path / "cache"), progress=False, **kwargs)


# ---- every problem, with its file ----------------------------------------------------------------
def test_check_reports_every_problem_with_its_file(tmp_path, prefix):
    images, masks, bad_files = write_bad_folder(str(tmp_path / "data"), num_good=8)
    name = register_folder_dataset(f"{prefix}_bad", images, masks, CLASSES)
    report = _check(name, tmp_path)

    assert report.num_samples == 8 + len(BAD_KINDS)
    found = sorted((p.kind, p.file) for p in report.problems)
    assert found == sorted((BAD_KINDS[stem], bad_files[stem]) for stem in BAD_KINDS)
    dicts = DatasetCatalog.get(name)
    assert sorted(os.path.basename(dicts[i]["file_name"])[:-4] for i in report.bad_indices) == \
        sorted(BAD_KINDS)
    # The table names each file (relative to the dataset folder) and the message of its problem.
    table = report.format()
    for stem in BAD_KINDS:
        assert os.path.relpath(bad_files[stem], str(tmp_path / "data")) in table
    assert "has values [7]" in table and "30x30 (WxH)" in table and "mode 'RGB'" in table
    # Histogram: over the 8 good samples, as counted from their mask files.
    good = [f"{i:03d}" for i in range(8)]
    pixels, ignored = _mask_counts(masks, good)
    np.testing.assert_array_equal(report.class_pixels, pixels)
    assert report.ignored_pixels == ignored == 0
    assert report.labelled_pixels == 8 * 32 * 32
    assert list(report.class_images) == [8, 8] and report.absent_classes == []
    # One error lists all of them.
    with pytest.raises(DatasetCheckError) as e:
        raise_dataset_problems([report])
    assert all(os.path.relpath(bad_files[s], str(tmp_path / "data")) in str(e.value)
               for s in BAD_KINDS)
    assert "--skip-bad" in str(e.value)


def test_dict_level_problems(tmp_path):
    """Image size other than the dict's, training sample without label, missing image."""
    _, masks, _ = write_bad_folder(str(tmp_path), num_good=3)
    images = str(tmp_path / "img")
    dicts = [
        {"file_name": f"{images}/000.png", "sem_seg_file_name": f"{masks}/000.png",
         "height": 32, "width": 32},
        {"file_name": f"{images}/001.png", "sem_seg_file_name": f"{masks}/001.png",
         "height": 64, "width": 32},
        {"file_name": f"{images}/002.png"},
        {"file_name": f"{images}/gone.png", "sem_seg_file_name": f"{masks}/000.png"},
    ]
    options = dict(dataset_name="dicts", class_names=["a", "b"], ignore_label=255,
                   cache_dir=str(tmp_path / "cache"), progress=False)
    report = check_dataset_dicts(dicts, **options)
    assert [(p.index, p.kind, p.file) for p in report.problems] == [
        (1, "image size", f"{images}/001.png"),
        (2, "no label", f"{images}/002.png"),
        (3, "missing image", f"{images}/gone.png"),
    ]
    assert "32x32 (WxH) but its dataset dict says 32x64" in report.problems[0].message
    # Unlabelled samples are fine where labels are not required.
    report = check_dataset_dicts(dicts, require_labels=False, **options)
    assert [p.kind for p in report.problems] == ["image size", "missing image"]


def test_worker_processes_give_the_same_report(tmp_path, prefix):
    n = dataset_check._MIN_FILES_FOR_WORKERS + 6
    images, masks = write_binary_folder(str(tmp_path / "data"), n, size=16, foreground_value=1)
    os.remove(os.path.join(masks, "005.png"))
    name = register_folder_dataset(f"{prefix}_w", images, masks, CLASSES)
    serial = _check(name, tmp_path, num_workers=1, use_cache=False)
    parallel = _check(name, tmp_path, num_workers=2, use_cache=False)
    assert serial.num_read == parallel.num_read == n
    assert [(p.kind, p.file) for p in serial.problems] == [
        (p.kind, p.file) for p in parallel.problems] == [("missing label", f"{masks}/005.png")]
    np.testing.assert_array_equal(serial.class_pixels, parallel.class_pixels)
    np.testing.assert_array_equal(serial.class_images, parallel.class_images)


# ---- cache -----------------------------------------------------------------------------------
def test_second_check_reads_nothing_and_a_changed_file_is_read_again(tmp_path, prefix,
                                                                     monkeypatch):
    images, masks, bad_files = write_bad_folder(str(tmp_path / "data"), num_good=4)
    name = register_folder_dataset(f"{prefix}_c", images, masks, CLASSES)
    first = _check(name, tmp_path)
    assert first.num_read == first.num_samples == 4 + len(BAD_KINDS)
    cache_files = os.listdir(tmp_path / "cache")
    assert len(cache_files) == 1 and cache_files[0].startswith(f"{prefix}_c-")

    # Unchanged files: nothing is read (reading would fail now), the report is the same.
    read = []
    original = dataset_check.inspect_sample
    monkeypatch.setattr(dataset_check, "inspect_sample",
                        lambda *a: read.append(a) or original(*a))
    second = _check(name, tmp_path, num_workers=1)
    assert second.num_read == 0 and read == []
    assert second.to_dict() == first.to_dict()

    # A mask rewritten in place (same size in bytes is possible: the mtime tells) is read again.
    good_mask = os.path.join(masks, "001.png")
    label = np.asarray(Image.open(good_mask)).copy()
    label[0, 0] = 9
    Image.fromarray(label).save(good_mask)
    stat = os.stat(good_mask)
    os.utime(good_mask, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10 ** 9))
    third = _check(name, tmp_path, num_workers=1)
    assert third.num_read == 1 and [os.path.basename(a[1]) for a in read] == ["001.png"]
    assert ("label values", good_mask) in [(p.kind, p.file) for p in third.problems]
    # A fixed file is read again and its problem is gone.
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(bad_files["no_mask"])
    fourth = _check(name, tmp_path, num_workers=1)
    assert fourth.num_read == 1
    assert "missing label" not in [p.kind for p in fourth.problems]
    # use_cache=False reads everything.
    assert _check(name, tmp_path, num_workers=1, use_cache=False).num_read == fourth.num_samples


# ---- suspicious labels -------------------------------------------------------------------------
def test_binary_0_255_masks_warn_with_the_label_map_fix(tmp_path, prefix):
    images, masks = write_binary_folder(str(tmp_path / "data"), 6)
    stems = [f"{i:03d}" for i in range(6)]
    report = _check(register_folder_dataset(f"{prefix}_bin", images, masks, CLASSES), tmp_path)
    assert report.problems == []
    (binary,) = [w for w in report.warnings if "0 and 255" in w]
    assert "--label-map 255:1" in binary and "label_map={255: 1}" in binary
    assert "ignore label" in binary
    assert report.absent_classes == ["disc"]
    assert any("'disc' (1) never appear" in w for w in report.warnings)
    _, ignored = _mask_counts(masks, stems)
    assert report.ignored_pixels == ignored > 0

    # With the map, 255 is the disc: counts as in the files, no warning.
    mapped = register_folder_dataset(f"{prefix}_map", images, masks, CLASSES, label_map="255:1")
    report = _check(mapped, tmp_path)
    assert report.warnings == [] and report.ignored_pixels == 0
    np.testing.assert_array_equal(report.class_pixels, _mask_counts(masks, stems, 2, {255: 1})[0])
    assert MetadataCatalog.get(mapped).label_map == {255: 1}
    assert "label map (stored value:class id): 255:1" in report.format()

    # With another ignore label, each 255 mask is an error; the fix is named once in the
    # report and in the error, and by the mapper for each file.
    other = register_folder_dataset(f"{prefix}_254", images, masks, CLASSES, ignore_label=254)
    report = _check(other, tmp_path)
    assert [p.kind for p in report.problems] == ["label values"] * 6
    assert not any("--label-map" in p.message for p in report.problems)
    (binary,) = report.warnings[:1]
    assert "--label-map 255:1" in binary and "not a class id" in binary
    with pytest.raises(DatasetCheckError) as e:
        raise_dataset_problems([report], limit=2, where="OUT/dataset_check.json")
    msg = str(e.value)
    assert msg.count("--label-map 255:1") == 1 and "... and 4 more" in msg
    assert "all problems: OUT/dataset_check.json" in msg
    mapper = SemSegDatasetMapper(True, augmentations=[], image_format="BGR", num_classes=2,
                                 ignore_label=254)
    with pytest.raises(BadInputError, match="--label-map 255:1"):
        mapper(DatasetCatalog.get(other)[0])


def test_high_ignored_fraction_warns(tmp_path, prefix):
    images, masks = write_binary_folder(str(tmp_path / "data"), 3, foreground_value=1)
    for stem in ("000", "001", "002"):
        path = os.path.join(masks, f"{stem}.png")
        label = np.asarray(Image.open(path)).copy()
        label[:24] = 255  # 75% ignored, and not a 0/255 label set
        Image.fromarray(label).save(path)
    name = register_folder_dataset(f"{prefix}_ign", images, masks, CLASSES)
    report = _check(name, tmp_path)
    assert report.ignored_fraction == pytest.approx(0.75)
    (warning,) = [w for w in report.warnings if "ignore label" in w]
    assert "75.0%" in warning and "--ignore-value" in warning and "IGNORE_VALUE" in warning
    assert not _check(name, tmp_path, max_ignored_fraction=0.8).warnings


# ---- label maps --------------------------------------------------------------------------------
def test_parse_and_apply_label_map():
    assert parse_label_map("255:1") == {255: 1}
    assert parse_label_map(" 255:1, 128 : 2 ,") == {128: 2, 255: 1}
    assert parse_label_map({"7": "0"}) == {7: 0}
    assert parse_label_map("") is None and parse_label_map(None) is None
    for bad, match in (("255", "VALUE:CLASS_ID"), ("a:1", "VALUE:CLASS_ID"),
                       ("1:2:3", "VALUE:CLASS_ID"), ("5:1,5:2", "more than once"),
                       ("-1:0", "negative")):
        with pytest.raises(ValueError, match=match):
            parse_label_map(bad)
    values = np.array([[0, 255, 7], [128, 255, 0]])
    np.testing.assert_array_equal(apply_label_map(values, {255: 1, 7: 255}),
                                  [[0, 1, 255], [128, 1, 0]])
    assert apply_label_map(values, None) is values


def test_label_map_through_registration_and_mapper(tmp_path, prefix):
    images, masks = write_binary_folder(str(tmp_path / "data"), 2)
    with pytest.raises(ValueError, match=r"maps to \[2\], neither a class id"):
        register_folder_dataset(f"{prefix}_x", images, masks, CLASSES, label_map={255: 2})
    name = register_folder_dataset(f"{prefix}_m", images, masks, CLASSES, label_map={255: 1})
    record = DatasetCatalog.get(name)[0]
    assert record["sem_seg_label_map"] == {255: 1}
    mapper = SemSegDatasetMapper(True, augmentations=[], image_format="BGR", num_classes=2,
                                 ignore_label=255)
    stored = np.asarray(Image.open(record["sem_seg_file_name"]))
    out = mapper(record)
    np.testing.assert_array_equal(out["sem_seg"].numpy(), (stored == 255).astype(np.int64))
    assert "sem_seg_label_map" not in out


def test_register_folder_command_line_options(tmp_path, prefix):
    import argparse

    images, masks = write_binary_folder(str(tmp_path / "data"), 1)
    parser = add_register_folder_argument(argparse.ArgumentParser())
    args = parser.parse_args([
        "--register-folder", f"{prefix}_a", images, masks, CLASSES, "--label-map", "255:1",
        "--register-folder", f"{prefix}_b", images, masks, CLASSES, "--ignore-value", "254",
        "--label-map", "255:1",
        "--register-folder", f"{prefix}_c", images, masks, "x,y,z",
    ])
    assert args.register_folder == [
        [f"{prefix}_a", images, masks, CLASSES, {"label_map": {255: 1}}],
        [f"{prefix}_b", images, masks, CLASSES, {"ignore_label": 254, "label_map": {255: 1}}],
        [f"{prefix}_c", images, masks, "x,y,z"],
    ]
    assert not hasattr(args, "label_map")
    names = register_folder_datasets(args.register_folder)
    assert MetadataCatalog.get(names[0]).label_map == {255: 1}
    assert MetadataCatalog.get(names[1]).ignore_label == 254
    assert MetadataCatalog.get(names[2]).get("label_map", None) is None
    for argv, match in ((["--label-map", "255:1"], "must follow the --register-folder"),
                        (["--register-folder", "n", images, masks, CLASSES, "--label-map", "x"],
                         "VALUE:CLASS_ID"),
                        (["--register-folder", "n", images, masks, CLASSES, "--ignore-value",
                          "1", "--ignore-value", "2"], "given twice")):
        with pytest.raises(SystemExit):
            parser.parse_args(argv)


# ---- the tool ----------------------------------------------------------------------------------
def _tool():
    spec = importlib.util.spec_from_file_location(
        "check_dataset_tool", os.path.join(REPO_ROOT, "tools", "check_dataset.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_check_dataset_tool(tmp_path, prefix, capsys):
    tool = _tool()
    images, masks, bad_files = write_bad_folder(str(tmp_path / "bad"), num_good=2)
    bin_images, bin_masks = write_binary_folder(str(tmp_path / "bin"), 2)
    cache = ["--cache-dir", str(tmp_path / "cache")]
    status = tool.main(["--register-folder", f"{prefix}_bad", images, masks, CLASSES,
                        "--register-folder", f"{prefix}_bin", bin_images, bin_masks, CLASSES,
                        "--json", str(tmp_path / "report.json"), *cache])
    out = capsys.readouterr().out
    assert status == 1
    assert f"dataset '{prefix}_bad': 8 samples, 6 with problems" in out
    assert all(os.path.basename(f) in out for f in bad_files.values())
    assert "--label-map 255:1" in out
    with open(tmp_path / "report.json") as f:
        reports = json.load(f)
    assert [r["dataset"] for r in reports] == [f"{prefix}_bad", f"{prefix}_bin"]
    assert reports[1]["absent_classes"] == ["disc"] and reports[1]["problems"] == []
    # The binary dataset with the fix passes.
    status = tool.main(["--register-folder", f"{prefix}_ok", bin_images, bin_masks, CLASSES,
                        "--label-map", "255:1", *cache])
    assert status == 0 and "WARNING" not in capsys.readouterr().out


@pytest.mark.parametrize("flag, value", [("--max-ignored-fraction", "2"), ("--num-workers", "-1")])
def test_tool_flag_errors_name_the_flag(tmp_path, prefix, capsys, flag, value):
    # Before: the error named DATASETS.CHECK.*, a key the command line never gave.
    images, masks = _void_folder(tmp_path, num=1, void=1, jpeg_mask=False)
    tool = _tool()
    status = run_tool(lambda: tool.main(["--register-folder", f"{prefix}_flags", images, masks,
                                         CLASSES, flag, value, "--cache-dir", str(tmp_path)]),
                      prog="check_dataset.py")
    err = capsys.readouterr().err
    assert status == 2 and f"{flag}=" in err
    assert "DATASETS.CHECK" not in err


def _void_folder(tmp_path, num=5, void=11, jpeg_mask=True):
    """Masks of 11 classes (0..10) that also hold the void value ``void``; the last sample's mask
    saved as JPEG (so "missing" as PNG)."""
    images, masks = tmp_path / "img", tmp_path / "mask"
    images.mkdir(), masks.mkdir()
    rng = np.random.default_rng(0)
    for i in range(num):
        Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(images / f"{i}.png")
        mask = rng.integers(0, 11, (12, 16)).astype(np.uint8)
        mask[0] = void
        ext = "jpg" if jpeg_mask and i == num - 1 else "png"
        Image.fromarray(mask).save(masks / f"{i}.{ext}")
    return str(images), str(masks)


VOID_CLASSES = [f"c{i}" for i in range(11)]


def test_a_void_value_shared_by_every_flagged_file_gets_one_hint(tmp_path, prefix):
    # Before: one row per file, the advice --skip-bad (every sample), every class "never appears".
    images, masks = _void_folder(tmp_path)
    name = register_folder_dataset(f"{prefix}_void", images, masks, VOID_CLASSES)
    report = _check(name, tmp_path)
    assert [p.values for p in report.problems if p.kind == "label values"] == [[11]] * 4
    assert len(report.hints) == 1
    hint = report.hints[0]
    assert "every one of the 4 label files with values outside the 11 classes" in hint
    assert "--ignore-value 11" in hint and "MODEL.SEM_SEG_HEAD.IGNORE_VALUE 11" in hint
    assert "NUM_CLASSES 12" in hint and "--label-map 11:ID" in hint
    with pytest.raises(DatasetCheckError) as info:
        raise_dataset_problems([report])
    first_line = str(info.value).splitlines()[0]
    assert "see the HINT below" in first_line and "--skip-bad" not in first_line
    assert "HINT: every one of the 4 label files" in str(info.value)
    # The classes are in the flagged files: "not counted", not "never appears".
    table = report.histogram_table()
    assert table.count("not counted: only in samples with problems") == 11
    assert "never appears" not in table
    assert not any("never appear" in w for w in report.warnings)
    # The JPEG mask beside the expected PNG is named, with why masks must be lossless.
    missing = [p for p in report.problems if p.kind == "missing label"]
    assert len(missing) == 1 and f"there is {os.path.join(masks, '4.jpg')}" in missing[0].message
    assert "masks must be lossless (PNG)" in missing[0].message


def test_no_hint_when_the_flagged_values_differ(tmp_path, prefix):
    images, masks = _void_folder(tmp_path, jpeg_mask=False)
    Image.fromarray(np.full((12, 16), 13, np.uint8)).save(os.path.join(masks, "0.png"))
    name = register_folder_dataset(f"{prefix}_mixed", images, masks, VOID_CLASSES)
    report = _check(name, tmp_path)
    assert report.hints == []
    with pytest.raises(DatasetCheckError, match=r"--skip-bad, or DATASETS.CHECK.SKIP_BAD True: "
                                                r"5 of 5 samples, 100%\)"):
        raise_dataset_problems([report])


# ---- the pixel limit over the cache, outputs that cannot be written or are inputs ---------------
def _warnings_logged():
    """(records, remove): the pointrend_seg WARNING records from now on (its logger does not
    propagate to caplog once Detectron2's setup_logger ran, e.g. in a tool's test)."""
    records = []

    class _Handler(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = _Handler(logging.WARNING)
    logging.getLogger("pointrend_seg").addHandler(handler)
    return records, lambda: logging.getLogger("pointrend_seg").removeHandler(handler)


def test_the_pixel_limit_applies_to_the_files_the_cache_holds(tmp_path, prefix, monkeypatch):
    """Before: checked once without a limit, files over a later limit passed from the cache
    ("0 problems ... 3 unchanged", exit 0) and the mapper refused them mid-training. Now the
    limit is tested against the cached sizes: the report is the one a fresh read gives."""
    images, masks = write_binary_folder(str(tmp_path / "data"), 3, foreground_value=1)  # 32x32
    exif = Image.Exif()
    exif[0x0112] = 6  # turned: stored 40x30 (WxH), used 30x40; the message gives the stored size
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(os.path.join(images, "t.png"),
                                                          exif=exif)
    Image.fromarray(np.zeros((40, 30), np.uint8)).save(os.path.join(masks, "t.png"))
    name = register_folder_dataset(f"{prefix}_limit", images, masks, CLASSES)
    fresh = _check(name, tmp_path, use_cache=False, max_image_pixels=1000)
    kinds = sorted(p.kind for p in fresh.problems)
    assert kinds == ["image too large"] * 4 + ["label too large"] * 4
    assert "is 40x30 (WxH)" in fresh.problems[-2].message
    assert _check(name, tmp_path, max_image_pixels=0).problems == []  # fills the cache
    read = []
    original = dataset_check.inspect_sample
    monkeypatch.setattr(dataset_check, "inspect_sample", lambda *a: read.append(a) or original(*a))
    cached = _check(name, tmp_path, num_workers=1, max_image_pixels=1000)
    assert read == [] and cached.num_read == 0
    assert cached.to_dict() == fresh.to_dict()  # problems, messages, counts, warnings
    # The cache keeps the files: under a limit they fit again, nothing is read.
    relaxed = _check(name, tmp_path, num_workers=1, max_image_pixels=1200)
    assert relaxed.problems == [] and relaxed.num_read == 0 and read == []


def test_a_cache_that_cannot_be_written_is_a_warning_and_the_report_stands(tmp_path, prefix,
                                                                          monkeypatch):
    """Before: the cache folder a file (FileExistsError), a read-only home (PermissionError) or
    a full disk (Errno 28) was a traceback after every file had been read: no report."""
    images, masks = write_binary_folder(str(tmp_path / "data"), 2, foreground_value=1)
    name = register_folder_dataset(f"{prefix}_nocache", images, masks, CLASSES)
    expected = _check(name, tmp_path / "first", use_cache=False).to_dict()
    blocker = tmp_path / "a_file"
    blocker.write_text("")

    def disk_full(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    records, remove = _warnings_logged()
    try:
        report = check_dataset(name, cache_dir=str(blocker), progress=False)
        assert report.to_dict() == expected and report.num_read == 2
        assert len(records) == 1 and f"cache {blocker}{os.sep}{prefix}_nocache-" in records[0]
        assert "cannot be written (FileExistsError" in records[0]
        monkeypatch.setattr(dataset_check, "atomic_write", disk_full)
        report = _check(name, tmp_path)
        assert report.to_dict() == expected
        assert len(records) == 2 and "(OSError: [Errno 28] No space left on device)" in records[1]
    finally:
        remove()
    assert os.listdir(tmp_path / "cache") == []


@pytest.mark.parametrize("damage", ["entry types", "wrong sizes", "truncated", "not a cache"])
def test_a_damaged_cache_is_read_again_with_one_warning(tmp_path, prefix, damage):
    """The cache is an optimisation: a damaged entry or file is never a reason to fail nor a
    size to trust (before: a TypeError traceback for an entry of other types; a truncated file
    was ignored without a word)."""
    images, masks = write_binary_folder(str(tmp_path / "data"), 2, foreground_value=1)
    name = register_folder_dataset(f"{prefix}_dmg", images, masks, CLASSES)
    expected = _check(name, tmp_path).to_dict()  # fills the cache
    (path,) = [tmp_path / "cache" / n for n in os.listdir(tmp_path / "cache")]
    data = json.loads(path.read_text())
    first, second = data["samples"].values()
    if damage == "entry types":
        first["facts"]["image_shape"], second["facts"] = "32x32", None
        text = json.dumps(data)
    elif damage == "wrong sizes":
        first["facts"]["image_shape"], second["facts"]["counts"] = [-5, 32], [0, 0]
        text = json.dumps(data)
    elif damage == "truncated":
        text = path.read_text()[:50]
    else:
        text = "[1, 2]"
    path.write_text(text)
    records, remove = _warnings_logged()
    try:
        report = _check(name, tmp_path, num_workers=1)
    finally:
        remove()
    assert report.to_dict() == expected and report.num_read == 2
    assert len(records) == 1 and f"the dataset check's cache {path} is damaged (" in records[0]
    if damage in ("entry types", "wrong sizes"):
        assert "(2 of its 2 entries are not as it writes them)" in records[0]
    assert json.loads(path.read_text())["samples"]  # rewritten whole
    assert _check(name, tmp_path, num_workers=1).num_read == 0


def _forget(name):
    for catalog in (DatasetCatalog, MetadataCatalog):
        if name in catalog.list():
            catalog.remove(name)


def test_check_dataset_json_never_replaces_an_input(tmp_path, prefix, capsys, monkeypatch):
    """Before: --json over a mask (or the class-names file, or the config) replaced it with the
    report, exit 0. Now one error naming it, before any file is read; links count."""
    tool = _tool()
    images, masks = write_binary_folder(str(tmp_path / "data"), 2, foreground_value=1)
    classes = tmp_path / "classes.txt"
    classes.write_text("background\ndisc\n")
    config = tmp_path / "config.yaml"
    demo = os.path.join(REPO_ROOT, "configs", "demo", "deeplabv3_pointrend_synthetic.yaml")
    config.write_text(f'_BASE_: "{demo}"\nMODEL:\n  SEM_SEG_HEAD:\n    NUM_CLASSES: 2\n')
    os.symlink(os.path.join(masks, "001.png"), tmp_path / "link.png")
    os.link(os.path.join(images, "000.png"), tmp_path / "hard.png")
    monkeypatch.setattr(dataset_check, "inspect_sample", None)  # reading a file would fail
    argv = ["--register-folder", f"{prefix}_j", images, masks, str(classes), "--config-file",
            str(config), "--cache-dir", str(tmp_path / "cache")]
    cases = [
        (os.path.join(masks, "000.png"), f"label (sem_seg_file_name) of sample 0 of dataset "
                                         f"'{prefix}_j'"),
        (os.path.join(images, "001.png"), f"image (file_name) of sample 1 of dataset '{prefix}_j'"),
        (str(classes), f"class names file of --register-folder {prefix}_j"),
        (str(config), "config file (--config-file)"),
        (str(tmp_path / "link.png"), f"label (sem_seg_file_name) of sample 1 of dataset "
                                     f"'{prefix}_j' ({os.path.join(masks, '001.png')})"),
        (str(tmp_path / "hard.png"), f"image (file_name) of sample 0 of dataset '{prefix}_j' "
                                     f"({os.path.join(images, '000.png')})"),
    ]
    before = {path: open(path, "rb").read() for path, _ in cases}
    for path, what in cases:
        _forget(f"{prefix}_j")  # each main registers it again
        with pytest.raises(OutputIsInputError) as e:
            tool.main(argv + ["--json", path])
        assert str(e.value) == (f"{path} is the {what}: writing it would replace the input; "
                                "choose another output")
        assert capsys.readouterr().out == ""  # refused before any report
        assert open(path, "rb").read() == before[path]
    # A folder, or a folder that does not exist: also before the check.
    for path, message in ((tmp_path, "is a folder"),
                          (tmp_path / "no" / "r.json", "does not exist")):
        _forget(f"{prefix}_j")
        with pytest.raises(ToolUsageError, match=f"--json {path}.*{message}"):
            tool.main(argv + ["--json", str(path)])


def test_check_dataset_json_that_cannot_be_written_is_one_line_after_the_report(
        tmp_path, prefix, capsys, monkeypatch):
    """Before: a full disk was an OSError traceback; the reports were printed, the JSON's
    failure not said in one line."""
    tool = _tool()
    images, masks = write_binary_folder(str(tmp_path / "data"), 2, foreground_value=1)

    def disk_full(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(tool, "atomic_write", disk_full)
    output = tmp_path / "report.json"
    status = run_tool(lambda: tool.main(["--register-folder", f"{prefix}_f", images, masks,
                                         CLASSES, "--no-cache", "--json", str(output)]),
                      prog="check_dataset.py")
    captured = capsys.readouterr()
    assert status == 2 and f"dataset '{prefix}_f': 2 samples, 0 with problems" in captured.out
    assert captured.err.splitlines()[-1] == (
        f"check_dataset.py: error: cannot write --json {output} (OSError: No space left on "
        "device); nothing was written under that name, the reports above are complete")
    assert "Traceback" not in captured.err
    assert not output.exists()
