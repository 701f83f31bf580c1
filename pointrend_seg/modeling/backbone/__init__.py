"""The dilated (DeepLab) ResNet backbone, the converter of torchvision / timm ResNet weights to it,
and of timm Swin / ViT weights to Detectron2 main's transformer backbones."""
from .convert import (
    WeightConversionError,
    convert_resnet_state_dict,
    unwrap_state_dict,
    verify_converted_state_dict,
)
from .convert_transformers import (
    convert_timm_swin_state_dict,
    convert_timm_vit_state_dict,
    transformer_kind,
)
from .resnet_deeplab import ThreeConvStem, build_dilated_resnet_backbone, dilated_resnet

__all__ = ["ThreeConvStem", "WeightConversionError", "build_dilated_resnet_backbone",
           "convert_resnet_state_dict", "convert_timm_swin_state_dict",
           "convert_timm_vit_state_dict", "dilated_resnet", "transformer_kind", "unwrap_state_dict",
           "verify_converted_state_dict"]
