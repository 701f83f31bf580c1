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
from .inference import InferenceHandle, InferenceOptions, prepare_for_inference
from .losses import cross_entropy_with_ignore
from .meta_arch import (
    GeneralizedSemanticSegmentor,
    PointRendSemanticSegmentor,
    SubdivisionTrace,
    TracedStep,
)
from .point_heads import POINT_HEAD_REGISTRY, LinearPointHead, MLPPointHead, build_point_head
from .point_sampling import (
    POINT_SAMPLER_REGISTRY,
    SUBDIVISION_SELECT_METHODS,
    UncertaintyPointSampler,
    build_point_sampler,
    calculate_uncertainty,
    grid_cell_centers,
    most_uncertain_cells,
    point_sample,
    sample_point_labels,
)
from .semantic_heads import (
    BilinearSegHead,
    CoarseSegHead,
    PointRendSegHead,
    SubdivisionStep,
    point_feature_names,
)
