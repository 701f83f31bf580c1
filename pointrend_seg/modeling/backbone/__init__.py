from .convert import (
    WeightConversionError,
    convert_resnet_state_dict,
    unwrap_state_dict,
    verify_converted_state_dict,
)
from .resnet_deeplab import ThreeConvStem, build_dilated_resnet_backbone
