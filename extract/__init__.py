"""Images -> pixels -> frozen backbone -> feature rows: the only place a backbone runs.

TensorFlow is imported when a Backbone is built, not when this package is imported.
"""

from headstart.errors import FolderError, LabelsError, WeightsError
from headstart.extract.backbone import (
    Backbone,
    WeightsSpec,
    backbone_for_identity,
    pipeline_identity,
)
from headstart.extract.backbones import BACKBONES, BackboneInfo, backbone_info
from headstart.extract.catalog import Catalog, find_images, scan
from headstart.extract.decode import decode_stream, hash_files
from headstart.extract.images import UnreadableImageError, decode_pixels
from headstart.extract.job import Job, Summary
from headstart.extract.labels import LabelSpec
from headstart.extract.loop import Embedded, embed_files
from headstart.extract.runner import extract_features

__all__ = [
    "BACKBONES", "Backbone", "BackboneInfo", "Catalog", "Embedded", "FolderError", "Job",
    "LabelSpec", "LabelsError", "Summary", "UnreadableImageError", "WeightsError",
    "WeightsSpec", "backbone_for_identity", "backbone_info", "decode_pixels", "decode_stream",
    "embed_files", "extract_features", "find_images", "hash_files", "pipeline_identity", "scan",
]
