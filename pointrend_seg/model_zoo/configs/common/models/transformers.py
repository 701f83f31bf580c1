"""
Transformer backbones of Detectron2 ``main`` (ViTDet's ViT + SimpleFeaturePyramid, Swin, MViTv2)
as LazyCall nodes, and :func:`pointrend_on`, which puts the DeepLabV3 coarse head and the
PointRend point head of a model on one of them: the coarse head on the stride-16 level, the
point head reading the stride-4 level. On Detectron2 v0.6 (no such backbones) loading a config
that uses them is one ``ConfigError`` saying so.
"""
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec

from pointrend_seg.config import ConfigError
from pointrend_seg.modeling.backbone.config_parts import layer_norm


def require_detectron2_main(*names):
    """
    The classes ``names`` of ``detectron2.modeling`` that only Detectron2 ``main`` has (``ViT``,
    ``SimpleFeaturePyramid``, ``SwinTransformer``, ``MViT``), for a config that uses them; on
    Detectron2 v0.6 one ``ConfigError`` saying so.
    """
    import detectron2.modeling as modeling

    missing = [n for n in names if not hasattr(modeling, n)]
    if missing:
        import detectron2

        raise ConfigError(
            f"this config needs {', '.join(missing)} of Detectron2's main branch; the installed "
            f"Detectron2 {detectron2.__version__} has none (v0.6 predates them). Install "
            "Detectron2 from main (in a checkout: make setup-d2main, or DETECTRON2_SOURCE="
            "'git+https://github.com/facebookresearch/detectron2.git' make setup)"
        )
    found = tuple(getattr(modeling, n) for n in names)
    return found if len(found) > 1 else found[0]


def vit_b(img_size=1024):
    """ViT-B/16 (ViTDet: windowed attention of 14 with global attention in blocks 2, 5, 8, 11)
    + SimpleFeaturePyramid of 256 channels, p2..p5 (strides 4..32)."""
    ViT, SimpleFeaturePyramid = require_detectron2_main("ViT", "SimpleFeaturePyramid")
    return L(SimpleFeaturePyramid)(
        net=L(ViT)(
            img_size=img_size, patch_size=16, embed_dim=768, depth=12, num_heads=12,
            drop_path_rate=0.1, window_size=14, mlp_ratio=4, qkv_bias=True,
            norm_layer=L(layer_norm)(eps=1e-6),
            window_block_indexes=[0, 1, 3, 4, 6, 7, 9, 10], residual_block_indexes=[],
            use_rel_pos=True, out_feature="last_feat",
        ),
        in_feature="last_feat", out_channels=256, scale_factors=(4.0, 2.0, 1.0, 0.5),
        norm="LN",
    )


def swin(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.2):
    """Swin Transformer (default: Swin-T), outputs p0..p3 (strides 4..32, embed_dim x 1, 2, 4,
    8 channels)."""
    SwinTransformer = require_detectron2_main("SwinTransformer")
    return L(SwinTransformer)(embed_dim=embed_dim, depths=list(depths), num_heads=list(num_heads),
                              drop_path_rate=drop_path_rate, out_indices=(0, 1, 2, 3))


def mvitv2_t():
    """MViTv2-T (depth 10, stages ending at blocks 0, 2, 7, 9), outputs scale2..scale5 (strides
    4..32; 96, 192, 384, 768 channels)."""
    MViT = require_detectron2_main("MViT")
    return L(MViT)(embed_dim=96, depth=10, num_heads=1, last_block_indexes=(0, 2, 7, 9),
                   residual_pooling=True, drop_path_rate=0.2,
                   norm_layer=L(layer_norm)(eps=1e-6),
                   out_features=("scale2", "scale3", "scale4", "scale5"))


def pointrend_on(model, backbone, *, coarse, fine):
    """
    ``model`` (a GeneralizedSemanticSegmentor LazyCall with a PointRend head) on ``backbone``:
    the coarse head on ``coarse`` = (feature, channels, stride), the point head reading ``fine``
    = (feature, channels). Returns ``model``.
    """
    name, channels, stride = coarse
    model.backbone = backbone
    head = model.sem_seg_head
    head.coarse_head.update(input_shape=L(ShapeSpec)(channels=channels, stride=stride),
                            in_feature=name)
    head.point_head.in_channels = fine[1]
    head.in_features = [fine[0]]
    return model
