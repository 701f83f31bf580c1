"""Model components; importing this module registers them in Detectron2's registries."""
from .backbone import ThreeConvStem, build_dilated_resnet_backbone
from .coarse_heads import (
    COARSE_HEAD_REGISTRY,
    DeepLabV3,
    DeepLabV3Plus,
    SemSegHeadAdapter,
    build_coarse_head,
)
from .export import ExportableSegmentor, ExportError, export_onnx, export_program
from .fast_subdivision import FastPointRendSegHead
from .inference import InferenceHandle, InferenceOptions, prepare_for_inference
from .losses import cross_entropy_with_ignore
from .meta_arch import GeneralizedSemanticSegmentor
from .point_heads import POINT_HEAD_REGISTRY, LinearPointHead, MLPPointHead, build_point_head
from .point_sampling import (
    calculate_uncertainty,
    grid_cell_centers,
    most_uncertain_cells,
    point_sample,
    sample_point_labels,
    training_point_coords,
)
from .semantic_heads import (
    BilinearSegHead,
    PointRendSegHead,
    SubdivisionTrace,
    TracedStep,
)

__all__ = [
    "COARSE_HEAD_REGISTRY", "POINT_HEAD_REGISTRY", "BilinearSegHead", "DeepLabV3",
    "DeepLabV3Plus", "ExportError", "ExportableSegmentor", "FastPointRendSegHead",
    "GeneralizedSemanticSegmentor", "InferenceHandle", "InferenceOptions", "LinearPointHead",
    "MLPPointHead", "PointRendSegHead", "SemSegHeadAdapter",
    "SubdivisionTrace", "ThreeConvStem", "TracedStep", "build_coarse_head",
    "build_dilated_resnet_backbone", "build_point_head", "calculate_uncertainty",
    "cross_entropy_with_ignore", "export_onnx", "export_program", "grid_cell_centers",
    "most_uncertain_cells", "point_sample", "prepare_for_inference",
    "sample_point_labels", "training_point_coords",
]
