"""What fit-head, predict, export-head and fine-tune accept, declared as data.

The heads, the library functions and the commands' parsers all read these declarations,
so a command builds its parser, answers --help and refuses a bad value without importing
scikit-learn, Keras or TensorFlow (the heavy modules are imported once the arguments
are checked). Nothing here imports more than `headstart.options`.
"""

from __future__ import annotations

from headstart.options import Choice, Range, Subset

HEADS = ("logreg", "softmax")
CLASS_WEIGHTS = ("none", "balanced")
# Which keyword arguments of fit_heads reach which head.
HEAD_OPTIONS = {
    "logreg": ("C",),
    "softmax": ("hidden_units", "dropout", "epochs", "patience", "batch_size", "learning_rate",
                "verbose"),
}

# fit_heads' defaults (and fit-head's).
FIT_DEFAULTS = {"features": "features.h5", "models": ("logreg",), "out_dir": "heads",
                "seed": 0, "split": "auto", "class_weight": "none"}

# LogRegHead: decades from strong to weak regularisation. With ~4096 standardised fc2
# features the best C is usually 1e-4..1e-2; tiny stores (a few hundred images) prefer
# larger C.
DEFAULT_CS = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
LOGREG_OPTIONS = {"C": Range(float, 0, open_low=True), "max_iter": Range(int, 1),
                  "tol": Range(float, 0, open_low=True), "patience": Range(int, 1),
                  "class_weight": Choice(("balanced",))}
LOGREG_NULLABLE = ("C", "class_weight")

# SoftmaxHead's allowed values and defaults.
SOFTMAX_OPTIONS = {"hidden_units": Range(int, 0), "dropout": Range(float, 0, 0.95),
                   "epochs": Range(int, 1), "patience": Range(int, 0),
                   "batch_size": Range(int, 1), "learning_rate": Range(float, 0, open_low=True),
                   "seed": Range(int, 0), "class_weight": Choice(("balanced",))}
SOFTMAX_NULLABLE = ("class_weight",)
SOFTMAX_DEFAULTS = {"hidden_units": 0, "dropout": 0.0, "epochs": 100, "patience": 5,
                    "batch_size": 64, "learning_rate": 1e-3}

# export-head and fine-tune.
QUANTIZE = ("none", "float16")
# What export-head writes besides labels.txt and export.json (TFLite: --tflite). Both by
# default: model.keras for Keras (load, inspect, train further), the SavedModel for
# TensorFlow Serving, TFLite conversion and runtimes without Keras, with the `images`
# signature and the class names in its graph. They hold the same weights.
EXPORT_FORMATS = ("keras", "saved_model")
EXPORT_OPTIONS = {"quantize": Choice(QUANTIZE), "formats": Subset(EXPORT_FORMATS)}
FINE_TUNE_OPTIONS = {
    "epochs": Range(int, 1), "patience": Range(int, 0),
    "learning_rate": Range(float, 0, 1, open_low=True), "batch_size": Range(int, 1),
    "seed": Range(int, 0), "quantize": EXPORT_OPTIONS["quantize"],
}
FINE_TUNE_DEFAULTS = {"features": "features.h5", "head": "heads/softmax", "epochs": 10,
                      "patience": 3, "learning_rate": 1e-5, "batch_size": 32, "seed": 0}
