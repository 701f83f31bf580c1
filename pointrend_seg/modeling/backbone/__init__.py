"""The dilated (DeepLab) ResNet backbone and the converter of torchvision / timm weights to it."""
from .convert import (
    WeightConversionError,
    convert_resnet_state_dict,
    unwrap_state_dict,
    verify_converted_state_dict,
)
from .resnet_deeplab import ThreeConvStem, build_dilated_resnet_backbone, dilated_resnet

__all__ = ["ThreeConvStem", "WeightConversionError", "build_dilated_resnet_backbone",
           "convert_resnet_state_dict", "dilated_resnet", "unwrap_state_dict",
           "verify_converted_state_dict"]
