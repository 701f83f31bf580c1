#!/usr/bin/env python
"""
Convert torchvision / timm ImageNet ResNet weights for pointrend_seg's backbone, and timm's Swin
Transformer / ViT weights for Detectron2 main's SwinTransformer / ViT (the transformer configs).

    tools/convert_weights.py resnet50-0676ba61.pth output/R-50-torchvision.pth
    tools/convert_weights.py model.safetensors output/R-101s-timm.pth   # timm resnet101s
    tools/convert_weights.py swin_tiny.safetensors output/swin_t.pth    # timm swin_tiny_patch4_window7_224

Transformer weights (found by their names) are renamed as
pointrend_seg/modeling/backbone/convert_transformers.py says; the tool prints the Python-config
overrides to train with them:

    tools/train_net.py --config-file configs/cityscapes/swin_t_pointrend.py train.init_checkpoint=OUTPUT ...

INPUT: a state dict saved by torchvision or timm (.pth / .pt / .bin, read with
torch.load(weights_only=True), or .safetensors). OUTPUT: a .pth file {"model": state dict} with the
names of build_dilated_resnet_backbone (Detectron2's ResNet names) under --prefix. The tool checks
that the result fills the backbone it prints, and prints the config overrides to train with it:

    tools/train_net.py --config-file CFG MODEL.WEIGHTS OUTPUT <printed overrides>

What converts and what does not (deep stems, avg-pool shortcuts, basic blocks):
pointrend_seg/modeling/backbone/convert.py. Refused, with one line naming the file and the tensors
(exit status 2): weights holding NaN or infinite values, tensors whose shapes do not fit the
architecture the others describe (e.g. a Swin / ViT attn.qkv weight that is not 3C x C), and an
OUTPUT that is the INPUT (the same file, also through a link). Detectron2's own DeepLab R-103
(detectron2://DeepLab/R-103.pkl, the default of the shipped configs) needs no conversion.
"""
import argparse
import os
import shlex
import sys

import torch

from pointrend_seg.files import atomic_write
from pointrend_seg.engine.checkpoint import load_weights_only
from pointrend_seg.engine.cli import (
    add_debug_argument,
    debug_requested,
    refuse_output_over_inputs,
    run_tool,
)
from pointrend_seg.modeling.backbone import (
    WeightConversionError,
    convert_resnet_state_dict,
    unwrap_state_dict,
    verify_converted_state_dict,
)
from pointrend_seg.modeling.backbone.convert_transformers import (
    convert_timm_swin_state_dict,
    convert_timm_vit_state_dict,
    transformer_kind,
)

_TRANSFORMERS = {"swin": (convert_timm_swin_state_dict, "backbone."),
                 "vit": (convert_timm_vit_state_dict, "backbone.net.")}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("input", help="torchvision / timm ResNet, timm Swin / ViT state dict "
                                 "(.pth, .pt, .bin, .safetensors)")
    p.add_argument("output", help="converted weights (.pth)")
    p.add_argument("--prefix", default=None,
                   help="module path of the backbone in the model (default: backbone.; "
                        "backbone.net. for a ViT, inside SimpleFeaturePyramid)")
    add_debug_argument(p)
    return p.parse_args(argv)


def load_state_dict_file(path):
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    if path.endswith(".pkl"):
        raise WeightConversionError(f"{path}: .pkl files are Detectron2 / Caffe2 checkpoints; "
                                    "give them to MODEL.WEIGHTS directly")
    return load_weights_only(path)


def main(argv=None):
    args = parse_args(argv)
    if not os.path.isfile(args.input):
        raise FileNotFoundError(f"input not found: {args.input}")
    refuse_output_over_inputs([args.output], {"input": args.input})
    state_dict = unwrap_state_dict(load_state_dict_file(args.input), args.input)
    kind = transformer_kind(state_dict)
    if kind:
        convert, prefix = _TRANSFORMERS[kind]
        prefix = prefix if args.prefix is None else args.prefix
        converted, opts = convert(state_dict, prefix, source_name=args.input)
        use = [f"train.init_checkpoint={args.output}"] + opts
    else:
        prefix = "backbone." if args.prefix is None else args.prefix
        converted, opts = convert_resnet_state_dict(state_dict, prefix, source_name=args.input)
        verify_converted_state_dict(converted, opts, prefix)
        use = ["MODEL.WEIGHTS", args.output] + opts
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    atomic_write(args.output, lambda f: torch.save({"model": converted}, f))
    print(f"wrote {args.output}: {len(converted)} tensors"
          + (f" (timm {'Swin Transformer' if kind == 'swin' else 'ViT'})" if kind else "")
          + ". Use it with:\n  " + " ".join(shlex.quote(o) for o in use))
    if kind == "vit":
        print("  (and model.backbone.net.num_heads= the source model's number of heads: "
              "not in the weights; ViT-S 6, ViT-B 12, ViT-L 16)")


if __name__ == "__main__":
    sys.exit(run_tool(main, prog="convert_weights.py", debug=debug_requested()))
