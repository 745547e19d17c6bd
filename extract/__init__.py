"""Images -> pixels -> frozen VGG16 -> fc2 rows: the only place TensorFlow runs a backbone.

TensorFlow is imported when a Backbone is built, not when this package is imported.
"""

from .backbone import Backbone, WeightsError, WeightsSpec, backbone_for_identity, pipeline_identity
from .images import FolderError, ImageFolder, UnreadableImageError, decode_pixels, scan_folder
from .runner import Embedded, Interrupted, Summary, embed_files, extract_features, find_images

__all__ = [
    "Backbone", "Embedded", "FolderError", "ImageFolder", "Interrupted", "Summary",
    "UnreadableImageError", "WeightsError", "WeightsSpec", "backbone_for_identity",
    "decode_pixels", "embed_files", "extract_features", "find_images", "pipeline_identity",
    "scan_folder",
]
