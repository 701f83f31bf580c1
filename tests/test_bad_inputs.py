"""
Bad inputs: one test per row of docs/bad_inputs.md. Each error must name the offending file
(or dataset); accepted conversions are checked value by value.
"""
import logging
import os

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from detectron2.data import DatasetCatalog, build_detection_test_loader
from detectron2.data import transforms as T
from detectron2.data.build import get_detection_dataset_dicts

from pointrend_seg.data import (
    BadInputError,
    SemSegDatasetMapper,
    build_sem_seg_augmentations,
    read_image_file,
    read_label_file,
)
from pointrend_seg.data.datasets import register_folder_dataset, register_voc_sem_seg
from pointrend_seg.data.transforms import PadToMinSize
from pointrend_seg.config import build_config


# ---- helpers ------------------------------------------------------------------------------------
def _rgb(h=6, w=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _save(path, array_or_image):
    image = array_or_image
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    image.save(str(path))
    return str(path)


def _sample(tmp_path, image=None, label=None, name="s"):
    """Write an RGB image and a grayscale label; return the dataset dict and both arrays."""
    image = _rgb() if image is None else image
    label = np.zeros(image.shape[:2], np.uint8) if label is None else label
    d = {"file_name": _save(tmp_path / f"{name}.png", image),
         "sem_seg_file_name": _save(tmp_path / f"{name}_label.png", label)}
    return d, image, label


def _mapper(num_classes=5, ignore_label=255, is_train=False, augmentations=(), fmt="BGR"):
    return SemSegDatasetMapper(is_train, augmentations=list(augmentations), image_format=fmt,
                               num_classes=num_classes, ignore_label=ignore_label)


# ---- label values -------------------------------------------------------------------------------
def test_label_value_out_of_range_rejected(tmp_path):
    label = np.zeros((6, 8), np.uint8)
    label[2, 3] = 7
    label[0, 0] = 255  # the ignore label is fine
    d, _, _ = _sample(tmp_path, label=label)
    with pytest.raises(BadInputError) as e:
        _mapper(num_classes=5)(d)
    msg = str(e.value)
    assert d["sem_seg_file_name"] in msg and "[7]" in msg and "NUM_CLASSES=5" in msg
    # Valid labels incl. the ignore label go through unchanged.
    label[2, 3] = 4
    d, _, _ = _sample(tmp_path, label=label, name="ok")
    np.testing.assert_array_equal(_mapper(num_classes=5)(d)["sem_seg"].numpy(), label)


def test_16bit_label_values_used_as_ids(tmp_path):
    label = np.zeros((6, 8), np.uint16)
    label[:, 4:] = 299
    label[0, 0] = 255
    d, _, _ = _sample(tmp_path, label=label)
    assert read_label_file(d["sem_seg_file_name"]).max() == 299
    # Ids above 255 survive a nearest-neighbour resize (they take the float path, not uint8).
    out = _mapper(num_classes=300, ignore_label=255,
                  augmentations=[T.Resize((12, 16), interp=Image.NEAREST)])(d)
    expected = np.kron(label.astype(np.int64), np.ones((2, 2), np.int64))
    np.testing.assert_array_equal(out["sem_seg"].numpy(), expected)
    with pytest.raises(BadInputError, match=r"\[299\]"):
        _mapper(num_classes=299)(d)


# ---- sizes --------------------------------------------------------------------------------------
def test_label_and_image_size_differ_rejected(tmp_path):
    d, _, _ = _sample(tmp_path, image=_rgb(6, 8), label=np.zeros((8, 6), np.uint8))
    with pytest.raises(BadInputError) as e:
        _mapper()(d)
    assert d["sem_seg_file_name"] in str(e.value) and d["file_name"] in str(e.value)
    assert "6x8" in str(e.value) and "8x6" in str(e.value)


def test_image_size_differs_from_dataset_dict_rejected(tmp_path):
    d, _, _ = _sample(tmp_path)
    out = _mapper()(dict(d, height=6, width=8))  # matching sizes are fine
    assert (out["height"], out["width"]) == (6, 8)
    with pytest.raises(BadInputError) as e:
        _mapper()(dict(d, height=1024, width=2048))
    assert d["file_name"] in str(e.value) and "2048x1024" in str(e.value)


# ---- missing or unreadable files ----------------------------------------------------------------
def test_missing_image_file(tmp_path):
    d, _, _ = _sample(tmp_path)
    os.remove(d["file_name"])
    with pytest.raises(BadInputError, match="image file not found") as e:
        _mapper()(d)
    assert d["file_name"] in str(e.value)


def test_missing_label_file(tmp_path):
    d, _, _ = _sample(tmp_path)
    os.remove(d["sem_seg_file_name"])
    with pytest.raises(BadInputError, match="label file not found") as e:
        _mapper()(d)
    assert d["sem_seg_file_name"] in str(e.value)


def test_unreadable_image_file(tmp_path):
    d, _, _ = _sample(tmp_path)
    with open(d["file_name"], "wb") as f:
        f.write(b"this is not an image")
    with pytest.raises(BadInputError, match="cannot read image file") as e:
        _mapper()(d)
    assert d["file_name"] in str(e.value)
    # A truncated file too.
    big = _save(tmp_path / "big.png", _rgb(64, 64))
    data = open(big, "rb").read()
    with open(big, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(BadInputError, match="cannot read image file") as e:
        read_image_file(big)
    assert big in str(e.value)


def test_unreadable_label_file(tmp_path):
    d, _, _ = _sample(tmp_path)
    with open(d["sem_seg_file_name"], "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(BadInputError, match="cannot read label file") as e:
        _mapper()(d)
    assert d["sem_seg_file_name"] in str(e.value)


def test_training_sample_without_label_rejected(tmp_path):
    d, _, _ = _sample(tmp_path)
    del d["sem_seg_file_name"]
    with pytest.raises(BadInputError, match="no 'sem_seg_file_name'") as e:
        _mapper(is_train=True)(d)
    assert d["file_name"] in str(e.value)
    assert "sem_seg" not in _mapper(is_train=False)(d)  # inference on unlabelled images is fine


# ---- image formats (accepted and converted) -----------------------------------------------------
def test_grayscale_image_converted_to_3_channels(tmp_path):
    gray = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    d, _, _ = _sample(tmp_path, image=np.stack([gray] * 3, -1))
    _save(d["file_name"], gray)
    assert Image.open(d["file_name"]).mode == "L"
    out = _mapper()(d)["image"].numpy()
    assert out.shape == (3, 6, 8)
    for c in range(3):
        np.testing.assert_array_equal(out[c], gray)


def test_16bit_image_scaled_to_8bit(tmp_path):
    gray16 = (np.arange(48, dtype=np.uint16).reshape(6, 8) * 1300 + 7).astype(np.uint16)
    path = _save(tmp_path / "g16.png", gray16)
    assert Image.open(path).mode.startswith("I")
    out = read_image_file(path, "RGB")
    assert out.dtype == np.uint8 and out.shape == (6, 8, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], (gray16 >> 8).astype(np.uint8))
    # 16-bit colour (48-bit PNG): the high byte of each channel, channels in the right order.
    rgb16 = _rgb().astype(np.uint16) * 257
    rgb16[0, 0] = (0x1234, 0xABCD, 0x00FF)  # R, G, B
    path = str(tmp_path / "c16.png")
    assert cv2.imwrite(path, np.ascontiguousarray(rgb16[..., ::-1]))  # cv2 writes BGR
    bgr = read_image_file(path, "BGR")
    np.testing.assert_array_equal(bgr[..., ::-1], (rgb16 >> 8).astype(np.uint8))
    np.testing.assert_array_equal(bgr[0, 0], [0x00, 0xAB, 0x12])


def test_float_and_32bit_images_of_unknown_scale_are_refused_naming_the_mode(tmp_path):
    """Before: a float TIFF photo (mode F, 0..1) was read as all black and a 32-bit one of 70000
    as all 255, without a word. Their scale is not in the file: refused ("image mode")."""
    photo = np.random.default_rng(0).random((6, 8)).astype(np.float32)
    for name, array, mode, values in (
            ("float01.tif", photo, "F", "values 0.0"),
            ("float255.tif", (photo * 255).astype(np.float32), "F", "values 0"),
            ("int32.tif", np.full((6, 8), 70000, np.int32), "I", "values 70000 to 70000"),
            ("negative.tif", np.full((6, 8), -5, np.int32), "I", "values -5 to -5")):
        path = _save(tmp_path / name, array)
        assert Image.open(path).mode == mode
        with pytest.raises(BadInputError, match=f"image file {path} has mode '{mode}'") as e:
            read_image_file(path, "BGR")
        assert e.value.kind == "image mode" and e.value.path == path and values in str(e.value)
    # 32-bit integers within 16 bits (older Pillows open 16-bit PNGs as "I"): as 16 bits, and
    # within 8 bits as they are.
    for array in (np.arange(48, dtype=np.int32).reshape(6, 8) * 1300,
                  np.arange(48, dtype=np.int32).reshape(6, 8) * 5):
        path = _save(tmp_path / "int32_ok.tif", array)
        assert Image.open(path).mode == "I"
        shift = 8 if array.max() > 255 else 0
        np.testing.assert_array_equal(read_image_file(path, "RGB")[..., 1], array >> shift)


def test_one_bit_masks_are_0_1_ids_and_alpha_or_float_masks_say_what_they_are(tmp_path):
    """Before: a 1-bit mask and a grayscale+alpha one were both refused as "colour label ...
    not colours". A 1-bit mask is a binary mask: its stored bits are the ids 0 and 1."""
    d, _, _ = _sample(tmp_path)
    mask = np.zeros((6, 8), np.uint8)
    mask[2:, 3:] = 1
    _save(d["sem_seg_file_name"], Image.fromarray(mask * 255).convert("1"))
    assert Image.open(d["sem_seg_file_name"]).mode == "1"
    np.testing.assert_array_equal(read_label_file(d["sem_seg_file_name"]), mask)
    np.testing.assert_array_equal(_mapper(num_classes=2)(d)["sem_seg"].numpy(), mask)
    for image, what in ((Image.fromarray(mask).convert("LA"), "grayscale with an alpha channel"),
                        (Image.fromarray(mask.astype(np.float32)), "floating-point"),
                        (Image.fromarray(mask).convert("CMYK"), "not one channel")):
        path = _save(tmp_path / f"m_{image.mode}.{'tif' if image.mode != 'LA' else 'png'}",
                     image)
        with pytest.raises(BadInputError) as e:
            read_label_file(path)
        message = str(e.value)
        assert e.value.kind == "label mode" and e.value.path == path
        assert message.startswith(f"label file {path} has mode '{image.mode}' (")
        assert what in message
        assert "colour" not in message, message


def test_rgba_image_alpha_dropped(tmp_path):
    rgb = _rgb()
    alpha = np.zeros((6, 8, 1), np.uint8)  # fully transparent: colours must still be kept as-is
    alpha[0, 0] = 255
    d, _, _ = _sample(tmp_path, image=rgb)
    _save(d["file_name"], np.concatenate([rgb, alpha], -1))
    assert Image.open(d["file_name"]).mode == "RGBA"
    out = _mapper(fmt="BGR")(d)["image"].numpy().transpose(1, 2, 0)
    np.testing.assert_array_equal(out, rgb[..., ::-1])
    np.testing.assert_array_equal(read_image_file(d["file_name"], "RGB"), rgb)


# ---- label formats ------------------------------------------------------------------------------
def test_palette_label_indices_used_not_colours(tmp_path):
    label = np.zeros((6, 8), np.uint8)
    label[:, 3:] = 1
    label[0, :] = 255
    image = Image.fromarray(label)
    palette = [0] * 768
    palette[3:6] = [128, 0, 0]  # index 1 is drawn dark red...
    palette[255 * 3:] = [224, 224, 192]
    image.putpalette(palette)
    d, _, _ = _sample(tmp_path)
    _save(d["sem_seg_file_name"], image)
    assert Image.open(d["sem_seg_file_name"]).mode == "P"
    # ...but the class id is the index 1, and 255 stays the ignore label.
    np.testing.assert_array_equal(_mapper(num_classes=2)(d)["sem_seg"].numpy(), label)


def test_rgb_label_rejected(tmp_path):
    d, _, _ = _sample(tmp_path)
    colour = np.zeros((6, 8, 3), np.uint8)
    colour[:, 4:] = (128, 64, 128)
    _save(d["sem_seg_file_name"], colour)
    with pytest.raises(BadInputError, match="mode 'RGB'") as e:
        _mapper()(d)
    assert d["sem_seg_file_name"] in str(e.value) and "not colours" in str(e.value)
    _save(d["sem_seg_file_name"], np.concatenate([colour, colour[..., :1]], -1))
    with pytest.raises(BadInputError, match="mode 'RGBA'"):
        read_label_file(d["sem_seg_file_name"])


# ---- datasets -----------------------------------------------------------------------------------
def test_unregistered_dataset_name(prefix):
    name = f"{prefix}_no_such_dataset"
    cfg = build_config(opts=["MODEL.SEM_SEG_HEAD.NUM_CLASSES", "21", "MODEL.DEVICE", "cpu"])
    with pytest.raises(KeyError) as e:
        build_detection_test_loader(cfg, name, mapper=SemSegDatasetMapper(cfg, False))
    msg = str(e.value)
    assert f"Dataset '{name}' is not registered" in msg
    # ...and the message lists what is available, ours included.
    assert "voc_2012_sem_seg_train" in msg and "camvid_sem_seg_test" in msg


def test_empty_dataset(tmp_path, prefix):
    # Any registered dataset that loads no samples: Detectron2 names it.
    DatasetCatalog.register(f"{prefix}_empty", lambda: [])
    with pytest.raises(AssertionError, match=f"Dataset '{prefix}_empty' is empty"):
        get_detection_dataset_dicts([f"{prefix}_empty"])
    # Our loaders name the dataset and where they looked.
    (tmp_path / "img").mkdir()
    (tmp_path / "mask").mkdir()
    (tmp_path / "img" / "notes.txt").write_text("no images here")
    register_folder_dataset(f"{prefix}_folder", str(tmp_path / "img"), str(tmp_path / "mask"),
                            ["a", "b"])
    with pytest.raises(ValueError, match=f"'{prefix}_folder' is empty") as e:
        get_detection_dataset_dicts([f"{prefix}_folder"])
    assert str(tmp_path / "img") in str(e.value)
    sets = tmp_path / "VOC2012" / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (tmp_path / "VOC2012" / "JPEGImages").mkdir()
    (tmp_path / "VOC2012" / "SegmentationClass").mkdir()
    (sets / "val.txt").write_text("\n\n")
    register_voc_sem_seg(str(tmp_path), prefix=f"{prefix}_voc")
    with pytest.raises(ValueError, match=f"'{prefix}_voc_val' is empty") as e:
        DatasetCatalog.get(f"{prefix}_voc_val")
    assert str(sets / "val.txt") in str(e.value)


def test_folder_image_without_mask(tmp_path, prefix, caplog):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for stem in ("0001", "0002", "0003"):
        _save(images / f"{stem}.jpg", _rgb())
    for stem in ("0001", "0003"):
        _save(masks / f"{stem}.png", np.zeros((6, 8), np.uint8))
    name = register_folder_dataset(f"{prefix}_f", str(images), str(masks), "a,b")
    # Loading keeps the image with the mask path it should have, and says so ...
    with caplog.at_level(logging.WARNING):
        dicts = DatasetCatalog.get(name)
    msg = caplog.text
    assert str(images) in msg and str(masks) in msg and "'0002'" in msg and "1 of 3" in msg
    assert name in msg
    missing = str(masks / "0002.png")
    assert [d["sem_seg_file_name"] for d in dicts][1] == missing
    # ... so that the dataset check lists it (tests/test_dataset_check.py) and the mapper names it.
    with pytest.raises(BadInputError, match="label file not found") as e:
        _mapper(num_classes=2)(dicts[1])
    assert missing in str(e.value) and e.value.kind == "missing label"


def test_folder_missing_directory(tmp_path, prefix):
    (tmp_path / "images").mkdir()
    with pytest.raises(FileNotFoundError, match="mask folder not found") as e:
        register_folder_dataset(f"{prefix}_f", str(tmp_path / "images"), str(tmp_path / "nope"),
                                ["a", "b"])
    assert str(tmp_path / "nope") in str(e.value)
    assert f"{prefix}_f" not in DatasetCatalog.list()
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        register_folder_dataset(f"{prefix}_g", str(tmp_path / "gone"), str(tmp_path / "images"),
                                ["a", "b"])
    # A folder deleted after registration: the loader says so.
    (tmp_path / "masks").mkdir()
    name = register_folder_dataset(f"{prefix}_h", str(tmp_path / "images"),
                                   str(tmp_path / "masks"), ["a", "b"])
    os.rmdir(tmp_path / "masks")
    with pytest.raises(FileNotFoundError, match="mask folder not found"):
        DatasetCatalog.get(name)


# ---- crop padding -------------------------------------------------------------------------------
def _crop_cfg(*opts):
    return build_config(opts=[
        "MODEL.DEVICE", "cpu", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "5",
        "INPUT.MIN_SIZE_TRAIN", "(32,)", "INPUT.MAX_SIZE_TRAIN", "1000",
        "INPUT.CROP.ENABLED", "True", "INPUT.CROP.TYPE", "absolute", "INPUT.CROP.SIZE", "(64, 64)",
        "INPUT.RANDOM_FLIP", "none", *opts,
    ])


def test_crop_larger_than_image_pads_with_ignore(tmp_path):
    image, label = _rgb(32, 48), np.full((32, 48), 3, np.uint8)
    d, _, _ = _sample(tmp_path, image=image, label=label)
    # 300 and -1 do not fit the uint8 label maps: they must not wrap around (300 -> 44).
    for ignore in (255, 11, 300, -1):
        cfg = _crop_cfg("MODEL.SEM_SEG_HEAD.IGNORE_VALUE", str(ignore),
                        "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "11")
        augs = build_sem_seg_augmentations(cfg, is_train=True)
        assert any(isinstance(a, PadToMinSize) for a in augs)
        out = SemSegDatasetMapper(cfg, True)(d)
        img, seg = out["image"].numpy(), out["sem_seg"].numpy()
        assert img.shape == (3, 64, 64) and seg.shape == (64, 64)  # the full crop size
        np.testing.assert_array_equal(img[:, :32, :48], image[..., ::-1].transpose(2, 0, 1))
        assert (img[:, 32:, :] == 0).all() and (img[:, :, 48:] == 0).all()
        assert (seg[:32, :48] == 3).all()
        assert (seg[32:, :] == ignore).all() and (seg[:, 48:] == ignore).all()
        assert (out["height"], out["width"]) == (32, 48)  # original size kept
    # Large enough images are not padded (only cropped).
    big, _, _ = _sample(tmp_path, image=_rgb(80, 96), label=np.ones((80, 96), np.uint8), name="b")
    out = SemSegDatasetMapper(_crop_cfg("INPUT.MIN_SIZE_TRAIN", "(80,)"), True)(big)
    assert out["sem_seg"].shape == (64, 64) and (out["sem_seg"] == 1).all()
    # No crop, no padding; relative crops never need it.
    assert not any(isinstance(a, PadToMinSize) for a in build_sem_seg_augmentations(
        _crop_cfg("INPUT.CROP.ENABLED", "False"), True))
    assert not any(isinstance(a, PadToMinSize) for a in build_sem_seg_augmentations(
        _crop_cfg("INPUT.CROP.TYPE", "relative_range", "INPUT.CROP.SIZE", "(0.5, 0.5)"), True))
    # The transform itself: inverse undoes it and coordinates do not move.
    x = np.arange(20, dtype=np.uint8).reshape(4, 5)
    t = PadToMinSize((6, 8), pad_value=0, seg_pad_value=255).get_transform(x)
    np.testing.assert_array_equal(t.inverse().apply_image(t.apply_image(x)), x)
    assert t.apply_segmentation(x)[4:].tolist() == [[255] * 8] * 2
    np.testing.assert_array_equal(t.apply_coords(np.array([[1.0, 2.0]])), [[1.0, 2.0]])
    assert isinstance(PadToMinSize((4, 5)).get_transform(x), T.NoOpTransform)
    torch.testing.assert_close(torch.as_tensor(t.apply_image(x)[:4, :5]), torch.as_tensor(x))
