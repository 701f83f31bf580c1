"""
Dataset registrations: PASCAL VOC 2012, CamVid, folder datasets (pointrend_seg/data/datasets/)
and Detectron2's Cityscapes / ADE20K loaders read through our mapper, all on tiny fake trees.
"""
import codecs
import importlib.util
import json
import logging
import os

import numpy as np
import pytest
import torch
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog

from pointrend_seg.data import BadInputError, SemSegDatasetMapper
from pointrend_seg.data.datasets import (
    CAMVID_CLASSES,
    VOC_CLASSES,
    parse_class_names,
    register_camvid,
    register_folder_dataset,
    register_folder_datasets,
    register_voc_sem_seg,
)
from pointrend_seg.data.datasets.voc import VOC_COLORS, voc_colormap

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- helpers ------------------------------------------------------------------------------------
def _write_image(path, h=12, w=16, seed=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)
    return rgb


def _write_label(path, label, palette=None):
    """Write ``label`` (H, W) uint8 as a grayscale PNG, or a palette PNG if ``palette`` is given."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = Image.fromarray(label.astype(np.uint8))
    if palette is not None:
        image.putpalette([c for color in palette for c in color])  # "L" -> "P", same indices
        assert image.mode == "P"
    image.save(path)


def _label(h=12, w=16, values=(0, 1, 2), seed=0):
    return np.random.default_rng(seed).choice(np.asarray(values), size=(h, w)).astype(np.uint8)


def _mapper(num_classes, ignore_label=255, is_train=False):
    return SemSegDatasetMapper(is_train, augmentations=[], image_format="RGB",
                               num_classes=num_classes, ignore_label=ignore_label)


# ---- PASCAL VOC 2012 ----------------------------------------------------------------------------
def _voc_tree(root, train_ids, val_ids, aug_ids=None, aug_lines=None):
    voc = os.path.join(root, "VOC2012")
    labels = {}
    for k, i in enumerate(sorted(set(train_ids) | set(val_ids) | set(aug_ids or []))):
        _write_image(os.path.join(voc, "JPEGImages", f"{i}.jpg"), seed=k)
        label = _label(values=(0, 1, 15, 20, 255), seed=k)
        labels[i] = label
        if i in train_ids or i in val_ids:
            _write_label(os.path.join(voc, "SegmentationClass", f"{i}.png"), label,
                         palette=voc_colormap())
        if aug_ids is not None and i in aug_ids:
            _write_label(os.path.join(voc, "SegmentationClassAug", f"{i}.png"), label)
    sets = os.path.join(voc, "ImageSets", "Segmentation")
    os.makedirs(sets, exist_ok=True)
    for split, ids in (("train", train_ids), ("val", val_ids)):
        with open(os.path.join(sets, f"{split}.txt"), "w") as f:
            f.write("\n".join(ids) + "\n")
    if aug_lines is not None:
        with open(os.path.join(sets, "train_aug.txt"), "w") as f:
            f.write("\n".join(aug_lines) + "\n")
    return voc, labels


def test_voc_classes_palette_and_default_registration():
    assert VOC_CLASSES == [
        "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
        "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
        "sheep", "sofa", "train", "tvmonitor",
    ]
    # The standard VOC palette (as stored in the SegmentationClass PNGs).
    assert VOC_COLORS[:4] == [(0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0)]
    assert VOC_COLORS[15] == (192, 128, 128)  # person
    assert VOC_COLORS[20] == (0, 64, 128)  # tvmonitor
    assert voc_colormap()[255] == (224, 224, 192)  # boundary colour
    for split, masks in (("train", "SegmentationClass"), ("val", "SegmentationClass"),
                         ("train_aug", "SegmentationClassAug")):
        name = f"voc_2012_sem_seg_{split}"
        assert name in DatasetCatalog.list()
        meta = MetadataCatalog.get(name)
        assert meta.stuff_classes == VOC_CLASSES and len(meta.stuff_colors) == 21
        assert meta.ignore_label == 255 and meta.evaluator_type == "sem_seg"
        assert meta.image_root.endswith(os.path.join("VOC2012", "JPEGImages"))
        assert meta.sem_seg_root.endswith(os.path.join("VOC2012", masks))


def test_voc_train_val_tiny_tree_through_mapper(tmp_path, prefix):
    train, val = ["2007_000032", "2007_000039", "2008_000001"], ["2007_000033", "2009_000002"]
    voc, labels = _voc_tree(tmp_path, train, val)
    names = register_voc_sem_seg(str(tmp_path), prefix=prefix)
    assert names == [f"{prefix}_train", f"{prefix}_val", f"{prefix}_train_aug"]
    train_dicts = DatasetCatalog.get(f"{prefix}_train")
    assert [d["image_id"] for d in train_dicts] == train  # split-file order
    assert train_dicts[1]["file_name"] == os.path.join(voc, "JPEGImages", "2007_000039.jpg")
    assert train_dicts[1]["sem_seg_file_name"] == os.path.join(
        voc, "SegmentationClass", "2007_000039.png")
    assert [d["image_id"] for d in DatasetCatalog.get(f"{prefix}_val")] == val
    assert MetadataCatalog.get(f"{prefix}_val").sem_seg_root == os.path.join(
        voc, "SegmentationClass")
    # Palette indices (incl. 255 boundaries) come out as class ids, not colours.
    out = _mapper(21)(train_dicts[2])
    assert out["image"].shape == (3, 12, 16) and out["image"].dtype == torch.uint8
    np.testing.assert_array_equal(out["sem_seg"].numpy(), labels["2008_000001"])


def test_voc_train_aug_present_plain_and_two_field_split_files(tmp_path, prefix):
    aug = ["2007_000032", "2008_000123", "2011_003276"]
    # Plain ids in train_aug.txt.
    voc, labels = _voc_tree(tmp_path, ["2007_000032"], ["2007_000033"], aug_ids=aug,
                            aug_lines=aug)
    register_voc_sem_seg(str(tmp_path), prefix=prefix)
    dicts = DatasetCatalog.get(f"{prefix}_train_aug")
    assert [d["image_id"] for d in dicts] == aug
    assert all(os.path.dirname(d["sem_seg_file_name"]) == os.path.join(voc, "SegmentationClassAug")
               for d in dicts)
    np.testing.assert_array_equal(_mapper(21)(dicts[1])["sem_seg"].numpy(), labels["2008_000123"])
    # "/JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png" lines, as in some distributions.
    with open(os.path.join(voc, "ImageSets", "Segmentation", "train_aug.txt"), "w") as f:
        f.write("".join(f"/JPEGImages/{i}.jpg /SegmentationClassAug/{i}.png\n" for i in aug))
    assert [d["image_id"] for d in DatasetCatalog.get(f"{prefix}_train_aug")] == aug


def test_voc_train_aug_absent_names_missing_folder_then_file(tmp_path, prefix):
    voc, _ = _voc_tree(tmp_path, ["2007_000032"], ["2007_000033"])
    register_voc_sem_seg(str(tmp_path), prefix=prefix)  # registering reads nothing
    with pytest.raises(FileNotFoundError) as e:
        DatasetCatalog.get(f"{prefix}_train_aug")
    assert os.path.join(voc, "SegmentationClassAug") in str(e.value)
    assert f"{prefix}_train_aug" in str(e.value)
    os.makedirs(os.path.join(voc, "SegmentationClassAug"))
    with pytest.raises(FileNotFoundError, match="train_aug.txt"):
        DatasetCatalog.get(f"{prefix}_train_aug")
    # The other splits are unaffected.
    assert len(DatasetCatalog.get(f"{prefix}_train")) == 1


def test_voc_split_id_without_mask_names_the_file(tmp_path, prefix):
    voc, _ = _voc_tree(tmp_path, ["a", "b"], ["c"])
    os.remove(os.path.join(voc, "SegmentationClass", "b.png"))
    register_voc_sem_seg(str(tmp_path), prefix=prefix)
    with pytest.raises(FileNotFoundError) as e:
        DatasetCatalog.get(f"{prefix}_train")
    assert os.path.join(voc, "SegmentationClass", "b.png") in str(e.value)


def test_voc_registration_is_lazy(tmp_path, prefix):
    missing_root = str(tmp_path / "nowhere")
    register_voc_sem_seg(missing_root, prefix=prefix)  # must not raise
    assert not os.path.exists(missing_root)
    # Loading says where it looked: our layout and the official archive's.
    with pytest.raises(FileNotFoundError) as info:
        DatasetCatalog.get(f"{prefix}_val")
    for where in ("VOC2012", os.path.join("VOCdevkit", "VOC2012"), "DETECTRON2_DATASETS"):
        assert where in str(info.value)


# ---- CamVid -------------------------------------------------------------------------------------
def _camvid_tree(root, sizes, dirname="camvid"):
    camvid = os.path.join(root, dirname)
    labels = {}
    for split, n in sizes.items():
        for k in range(n):
            stem = f"{split}_{k:04d}"
            _write_image(os.path.join(camvid, split, stem + ".png"), seed=k)
            label = _label(values=tuple(range(12)), seed=k)  # 0..10 classes, 11 void
            label[0, :4] = 11
            labels[stem] = label
            _write_label(os.path.join(camvid, split + "annot", stem + ".png"), label)
    return camvid, labels


def test_camvid_classes_and_ignore_label_metadata():
    assert CAMVID_CLASSES == ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol",
                              "Fence", "Car", "Pedestrian", "Bicyclist"]
    for split in ("train", "val", "test"):
        meta = MetadataCatalog.get(f"camvid_sem_seg_{split}")
        assert f"camvid_sem_seg_{split}" in DatasetCatalog.list()
        assert meta.stuff_classes == CAMVID_CLASSES and len(meta.stuff_colors) == 11
        # void = 11 stays 11 on disk and is the ignore label (not remapped to 255).
        assert meta.ignore_label == 11
        assert meta.evaluator_type == "sem_seg"
        assert meta.image_root.endswith(os.path.join("camvid", split))
        assert meta.sem_seg_root.endswith(os.path.join("camvid", split + "annot"))


def test_camvid_tiny_tree_counts_pairs_and_void(tmp_path, prefix, caplog):
    camvid, labels = _camvid_tree(tmp_path, {"train": 3, "val": 2, "test": 1})
    # A stray file that is not a PNG is not an image of the split.
    open(os.path.join(camvid, "train", "notes.txt"), "w").close()
    names = register_camvid(str(tmp_path), prefix=prefix)
    assert names == [f"{prefix}_train", f"{prefix}_val", f"{prefix}_test"]
    with caplog.at_level(logging.WARNING):
        counts = {n: len(DatasetCatalog.get(n)) for n in names}
    assert counts == {names[0]: 3, names[1]: 2, names[2]: 1}
    assert "the SegNet CamVid train split has 367" in caplog.text
    d = DatasetCatalog.get(f"{prefix}_val")[1]
    assert d["file_name"] == os.path.join(camvid, "val", "val_0001.png")
    assert d["sem_seg_file_name"] == os.path.join(camvid, "valannot", "val_0001.png")
    # With IGNORE_VALUE 11 the void pixels pass through as 11 (ignored by loss and evaluation)...
    out = _mapper(11, ignore_label=11)(d)
    np.testing.assert_array_equal(out["sem_seg"].numpy(), labels["val_0001"])
    assert (out["sem_seg"][0, :4] == 11).all()
    # ...with the default 255 the mapper refuses them and says which file and value.
    with pytest.raises(BadInputError) as e:
        _mapper(11, ignore_label=255)(d)
    assert d["sem_seg_file_name"] in str(e.value) and "[11]" in str(e.value)


def test_camvid_void_is_ignored_by_the_evaluators(tmp_path, prefix):
    from detectron2.evaluation import SemSegEvaluator

    from pointrend_seg.evaluation import BoundaryEvaluator

    _, labels = _camvid_tree(tmp_path, {"test": 2})
    register_camvid(str(tmp_path), prefix=prefix)
    name = f"{prefix}_test"
    evaluators = [SemSegEvaluator(name, distributed=False),
                  BoundaryEvaluator(name, distributed=False)]
    for e in evaluators:
        e.reset()
    for d in DatasetCatalog.get(name):
        gt = labels[d["image_id"]]
        pred = np.where(gt == 11, 3, gt)  # right everywhere except "Road" on void: must not count
        scores = torch.nn.functional.one_hot(torch.as_tensor(pred, dtype=torch.int64), 11)
        for e in evaluators:
            e.process([d], [{"sem_seg": scores.permute(2, 0, 1).float()}])
    sem = evaluators[0].evaluate()["sem_seg"]
    assert sem["mIoU"] == pytest.approx(100.0) and sem["pACC"] == pytest.approx(100.0)
    evaluators[1].evaluate()  # would raise on label 11 if void were not the ignore label


# ---- folder datasets ----------------------------------------------------------------------------
def test_folder_dataset_pairs_by_stem_and_sets_metadata(tmp_path, prefix, caplog):
    images, masks = tmp_path / "img", tmp_path / "mask"
    labels = {}
    for k, (stem, ext) in enumerate([("b", ".jpg"), ("a", ".png"), ("c", ".JPEG")]):
        _write_image(str(images / (stem + ext)), seed=k)
        labels[stem] = _label(values=(0, 1, 2, 255), seed=k)
        _write_label(str(masks / f"{stem}.png"), labels[stem])
    _write_label(str(masks / "orphan.png"), _label())  # mask without an image: skipped
    (images / "readme.txt").write_text("not an image")
    name = register_folder_dataset(f"{prefix}_f", str(images), str(masks), "bg, road ,car")
    meta = MetadataCatalog.get(name)
    assert meta.stuff_classes == ["bg", "road", "car"] and meta.ignore_label == 255
    assert len(meta.stuff_colors) == 3 and len(set(meta.stuff_colors)) == 3
    assert meta.evaluator_type == "sem_seg"
    assert (meta.image_root, meta.sem_seg_root) == (str(images), str(masks))
    with caplog.at_level(logging.WARNING):
        dicts = DatasetCatalog.get(name)
    assert "orphan" in caplog.text
    assert [d["image_id"] for d in dicts] == ["a", "b", "c"]
    assert [os.path.basename(d["file_name"]) for d in dicts] == ["a.png", "b.jpg", "c.JPEG"]
    assert all(d["sem_seg_file_name"] == str(masks / f"{d['image_id']}.png") for d in dicts)
    np.testing.assert_array_equal(_mapper(3)(dicts[0])["sem_seg"].numpy(), labels["a"])
    # image_ext restricts the images considered.
    only_jpg = register_folder_dataset(f"{prefix}_jpg", str(images), str(masks), ["x", "y", "z"],
                                       image_ext="jpg")
    assert [d["image_id"] for d in DatasetCatalog.get(only_jpg)] == ["b"]


def test_folder_dataset_same_folder_and_ambiguous_stems(tmp_path, prefix):
    folder = tmp_path / "both"
    _write_image(str(folder / "x.jpg"))
    _write_label(str(folder / "x.png"), _label())
    name = register_folder_dataset(f"{prefix}_same", str(folder), str(folder), ["a", "b", "c"])
    dicts = DatasetCatalog.get(name)
    assert [(os.path.basename(d["file_name"]), os.path.basename(d["sem_seg_file_name"]))
            for d in dicts] == [("x.jpg", "x.png")]
    # Two images with one stem: refuse rather than pick one silently.
    images, masks = tmp_path / "img", tmp_path / "mask"
    _write_image(str(images / "y.jpg"))
    _write_image(str(images / "y.png"))
    _write_label(str(masks / "y.png"), _label())
    name = register_folder_dataset(f"{prefix}_amb", str(images), str(masks), ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"ambiguous.*\['y.jpg', 'y.png'\]"):
        DatasetCatalog.get(name)


def test_folder_dataset_argument_errors(tmp_path, prefix):
    images, masks = tmp_path / "img", tmp_path / "mask"
    images.mkdir()
    masks.mkdir()
    register_folder_dataset(f"{prefix}_dup", str(images), str(masks), ["a", "b"])
    with pytest.raises(ValueError, match="already registered"):
        register_folder_dataset(f"{prefix}_dup", str(images), str(masks), ["a", "b"])
    with pytest.raises(ValueError, match=r"ignore_label=1 is the id of class 'b'"):
        register_folder_dataset(f"{prefix}_ign", str(images), str(masks), ["a", "b"],
                                ignore_label=1)
    with pytest.raises(ValueError, match="one RGB triple per class"):
        register_folder_dataset(f"{prefix}_col", str(images), str(masks), ["a", "b"],
                                stuff_colors=[(1, 2, 3)])
    with pytest.raises(ValueError, match="duplicate class names"):
        register_folder_dataset(f"{prefix}_cls", str(images), str(masks), "a,b,a")
    with pytest.raises(ValueError, match="empty class name"):
        register_folder_dataset(f"{prefix}_cls", str(images), str(masks), "a,,b")
    with pytest.raises(FileNotFoundError, match="missing_classes.txt"):
        register_folder_dataset(f"{prefix}_cls", str(images), str(masks),
                                str(tmp_path / "missing_classes.txt"))
    # None of the failed calls left a registration behind.
    assert [n for n in DatasetCatalog.list() if n.startswith(prefix)] == [f"{prefix}_dup"]


def test_parse_class_names_from_file(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("background\n\n road \ncar\n\n")
    assert parse_class_names(str(path)) == ["background", "road", "car"]
    assert parse_class_names(["a", "b"]) == ["a", "b"]
    assert parse_class_names("solo") == ["solo"]


@pytest.mark.parametrize("text", ["#background\nb\nc\nd\n", "# my classes\na\nb\n",
                                  "a\nb\n# end\n"])
def test_a_class_names_line_starting_with_hash_is_refused_not_guessed(tmp_path, text):
    """Before: dropped as a comment, so "#background" first gave 3 classes, each id one too low
    (silently). A '#' line is a comment or a name; either guess shifts ids for the other
    reading, so it is one error naming the file and the line."""
    path = tmp_path / "classes.txt"
    path.write_text(text)
    line = next(i for i, t in enumerate(text.splitlines()) if t.startswith("#")) + 1
    with pytest.raises(ValueError, match=f"class names file {path}, line {line}: '#"):
        parse_class_names(str(path))
    assert parse_class_names("#a,b") == ["#a", "b"]  # a comma list has no comments


def test_class_names_file_encodings(tmp_path):
    """UTF-8 (with or without a BOM) and UTF-16 with its BOM (Windows Notepad's "Unicode") are
    read; Latin-1, UTF-16 without a BOM and UTF-32 are one ValueError naming the file (before:
    a UnicodeDecodeError traceback, or names holding NUL characters)."""
    path = tmp_path / "classes.txt"
    for encoding in ("utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be"):
        data = "caf\u00e9\r\nroad\r\n".encode(encoding)
        if encoding in ("utf-16-le", "utf-16-be"):  # with the BOM that Notepad writes
            data = "\ufeff".encode(encoding) + data
        path.write_bytes(data)
        assert parse_class_names(str(path)) == ["caf\u00e9", "road"], encoding
    for encoding in ("latin-1", "utf-16-le", "utf-32"):
        path.write_bytes("caf\u00e9\nroad\n".encode(encoding))
        with pytest.raises(ValueError, match=f"class names file {path} (is not UTF-8 text|holds "
                                             "NUL characters).*save it as UTF-8"):
            parse_class_names(str(path))
    path.write_bytes(codecs.BOM_UTF16_LE + b"a\x00\n")  # odd length: not UTF-16 either
    with pytest.raises(ValueError, match="is not UTF-16 text"):
        parse_class_names(str(path))


def test_train_net_register_folder_option(tmp_path, prefix):
    spec = importlib.util.spec_from_file_location(
        "train_net_under_test", os.path.join(REPO_ROOT, "tools", "train_net.py"))
    train_net = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_net)
    for sub in ("a_img", "a_mask", "b_img", "b_mask"):
        (tmp_path / sub).mkdir()
    _write_image(str(tmp_path / "a_img" / "1.png"))
    _write_label(str(tmp_path / "a_mask" / "1.png"), _label())
    (tmp_path / "classes.txt").write_text("sky\nroad\ncar\n")
    args = train_net.argument_parser().parse_args([
        "--config-file", "x.yaml",
        "--register-folder", f"{prefix}_a", str(tmp_path / "a_img"), str(tmp_path / "a_mask"),
        str(tmp_path / "classes.txt"),
        "--register-folder", f"{prefix}_b", str(tmp_path / "b_img"), str(tmp_path / "b_mask"),
        "p,q",
        "SOLVER.MAX_ITER", "1",
    ])
    assert args.opts == ["SOLVER.MAX_ITER", "1"]
    assert len(args.register_folder) == 2
    # What main() calls, in every process.
    assert register_folder_datasets(args.register_folder) == [f"{prefix}_a", f"{prefix}_b"]
    assert MetadataCatalog.get(f"{prefix}_a").stuff_classes == ["sky", "road", "car"]
    assert MetadataCatalog.get(f"{prefix}_b").stuff_classes == ["p", "q"]
    assert len(DatasetCatalog.get(f"{prefix}_a")) == 1
    assert train_net.argument_parser().parse_args([]).register_folder == []
    assert register_folder_datasets([]) == []


# ---- Cityscapes and ADE20K (Detectron2's registrations) ----------------------------------------
def test_cityscapes_fake_tree_through_detectron2_loader_and_our_mapper(tmp_path):
    from detectron2.data.datasets.cityscapes import load_cityscapes_semantic

    # Detectron2 registered these at import, from $DETECTRON2_DATASETS at that time.
    for split in ("train", "val"):
        meta = MetadataCatalog.get(f"cityscapes_fine_sem_seg_{split}")
        assert f"cityscapes_fine_sem_seg_{split}" in DatasetCatalog.list()
        assert len(meta.stuff_classes) == 19 and meta.ignore_label == 255
    image_dir = tmp_path / "cityscapes" / "leftImg8bit" / "train"
    gt_dir = tmp_path / "cityscapes" / "gtFine" / "train"
    train_ids = {}
    for k, (city, base) in enumerate([("aachen", "aachen_000000_000019"),
                                      ("bonn", "bonn_000001_000019")]):
        _write_image(str(image_dir / city / f"{base}_leftImg8bit.png"), h=8, w=16, seed=k)
        gt = gt_dir / city
        raw = _label(h=8, w=16, values=(7, 8, 26), seed=k)  # labelIds: road, sidewalk, car
        train_ids[base] = np.select([raw == 7, raw == 8, raw == 26], [0, 1, 13]).astype(np.uint8)
        train_ids[base][0, 0] = 255
        _write_label(str(gt / f"{base}_gtFine_labelIds.png"), raw)
        _write_label(str(gt / f"{base}_gtFine_instanceIds.png"), raw)
        _write_label(str(gt / f"{base}_gtFine_labelTrainIds.png"), train_ids[base])
        (gt / f"{base}_gtFine_polygons.json").write_text(
            json.dumps({"imgHeight": 8, "imgWidth": 16}))
    dicts = sorted(load_cityscapes_semantic(str(image_dir), str(gt_dir)),
                   key=lambda d: d["file_name"])
    assert len(dicts) == 2
    mapper = _mapper(19)
    for d in dicts:
        base = os.path.basename(d["file_name"])[: -len("_leftImg8bit.png")]
        out = mapper(d)
        assert out["image"].shape == (3, 8, 16) and (out["height"], out["width"]) == (8, 16)
        # The train ids (19 classes + 255) are used, not the raw label ids.
        np.testing.assert_array_equal(out["sem_seg"].numpy(), train_ids[base])


def test_ade20k_fake_tree_through_detectron2_loader_and_our_mapper(tmp_path):
    from detectron2.data.datasets import load_sem_seg

    for split in ("train", "val"):
        meta = MetadataCatalog.get(f"ade20k_sem_seg_{split}")
        assert f"ade20k_sem_seg_{split}" in DatasetCatalog.list()
        assert len(meta.stuff_classes) == 150 and meta.ignore_label == 255
        assert meta.sem_seg_root.endswith(os.path.join(
            "ADEChallengeData2016", "annotations_detectron2",
            "training" if split == "train" else "validation"))
    root = tmp_path / "ADEChallengeData2016"
    image_dir = root / "images" / "validation"
    gt_dir = root / "annotations_detectron2" / "validation"
    labels = {}
    for k in range(2):
        stem = f"ADE_val_{k + 1:08d}"
        _write_image(str(image_dir / f"{stem}.jpg"), h=10, w=14, seed=k)
        labels[stem] = _label(h=10, w=14, values=(0, 5, 149, 255), seed=k)
        _write_label(str(gt_dir / f"{stem}.png"), labels[stem])
    # Same call as Detectron2's register_all_ade20k.
    dicts = load_sem_seg(str(gt_dir), str(image_dir), gt_ext="png", image_ext="jpg")
    assert len(dicts) == 2
    mapper = _mapper(150)
    for d in dicts:
        out = mapper(d)
        assert out["image"].shape == (3, 10, 14)
        stem = os.path.splitext(os.path.basename(d["file_name"]))[0]
        np.testing.assert_array_equal(out["sem_seg"].numpy(), labels[stem])


def test_camvid_and_voc_found_in_their_official_folders(tmp_path, prefix):
    """CamVid/ as the SegNet download names it, VOCdevkit/VOC2012 as the VOC archive does."""
    camvid, _ = _camvid_tree(tmp_path, {"test": 2}, dirname="CamVid")
    register_camvid(str(tmp_path), prefix=f"{prefix}_cv")
    files = [d["file_name"] for d in DatasetCatalog.get(f"{prefix}_cv_test")]
    assert files == [os.path.join(camvid, "test", f"test_{k:04d}.png") for k in range(2)]
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    _write_image(str(voc / "JPEGImages" / "a.jpg"), seed=0)
    _write_label(str(voc / "SegmentationClass" / "a.png"), _label(values=(0, 1), seed=0))
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("a\n")
    register_voc_sem_seg(str(tmp_path), prefix=f"{prefix}_voc")
    (record,) = DatasetCatalog.get(f"{prefix}_voc_val")
    assert record["file_name"] == str(voc / "JPEGImages" / "a.jpg")
