"""export-head and fine-tune: parse arguments, call the library by keyword, print, set the status.

Exit status as in every headstart command (headstart.errors): 0 success; 2 bad input (one
sentence on stderr: what went wrong, which file, what to do); 4 disk full or I/O error;
130 interrupted (fine-tune: the completed epochs are kept and the same command resumes).
"""

from __future__ import annotations

import argparse
import sys

from tqdm import tqdm

from headstart.classify.cli import add_moved_backbone_options
from headstart.classify.options import (
    EXPORT_FORMATS,
    EXPORT_OPTIONS,
    FINE_TUNE_DEFAULTS,
    FINE_TUNE_OPTIONS,
    QUANTIZE,
)
from headstart.cli import run_command
from headstart.options import argument_type


def _stderr(line: str) -> None:
    tqdm.write(line, file=sys.stderr)  # above a progress bar when one is shown


def _add_export_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tflite", action="store_true",
                        help="also write model.tflite (the pixels signature, for TFLite)")
    parser.add_argument("--quantize", type=argument_type(EXPORT_OPTIONS["quantize"]),
                        default="none", metavar="|".join(QUANTIZE),
                        help="'float16': the TFLite file with float16 weights, about half the "
                             "size (model_float16.tflite; implies --tflite) "
                             "(default: %(default)s)")
    add_moved_backbone_options(parser)


# -------------------------------------------------------------------------- export-head

def export_head_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="export-head",
        description="Fuse a head from fit-head with its backbone into one image classifier "
                    "(uint8 RGB pixels in, class probabilities out; the preprocessing is inside) "
                    "and save it as model.keras and a TensorFlow SavedModel (--formats) and "
                    "optionally TFLite.")
    parser.add_argument("--head", required=True, help="head directory written by fit-head, "
                                                      "e.g. heads/logreg")
    parser.add_argument("-o", "--output-dir", metavar="DIR", default="model",
                        help="export folder; an earlier export there is replaced "
                             "(default: %(default)s)")
    parser.add_argument("--formats", type=argument_type(EXPORT_OPTIONS["formats"]),
                        default=EXPORT_FORMATS, metavar="LIST",
                        help="which of keras (model.keras) and saved_model (saved_model/) to "
                             "write; both hold the same weights, so one halves the size: "
                             "model.keras for Keras, saved_model for TensorFlow Serving, "
                             "TFLite and runtimes without Keras (default: "
                             f"{','.join(EXPORT_FORMATS)})")
    _add_export_options(parser)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    return parser


def _export(args: argparse.Namespace) -> int:
    from headstart.classify.export import export_head

    exported = export_head(args.head, args.output_dir, tflite=args.tflite,
                           quantize=args.quantize, formats=args.formats,
                           weights_path=args.weights,
                           preset=args.backbone, log=None if args.quiet else _stderr)
    print(f"exported {args.head} to {exported.directory}/:")
    for name, size in exported.sizes.items():
        print(f"  {name:<22} {size / 1e6:9.1f} MB")
    size, dtype = int(exported.model.input.shape[1]), exported.model.input.dtype
    encoded = (", or encoded image bytes (signature 'images')"
               if "saved_model" in args.formats else "")
    print(f"input: {dtype} RGB pixels (n, {size}, {size}, 3) after headstart's resize"
          f"{encoded}; classes in labels.txt.")
    return 0


def export_head_main(argv: list[str] | None = None) -> int:
    return run_command(export_head_parser(), _export, argv)


# ---------------------------------------------------------------------------- fine-tune

def fine_tune_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fine-tune",
        description="Phase two of transfer learning: unfreeze the backbone's top layers and "
                    "train them with the head at a low learning rate on the store's images, "
                    "on the head's split; report test accuracy before and after; save the "
                    "result as export-head does. GPU work; resumable after a kill.")
    parser.add_argument("--features", metavar="STORE", default=FINE_TUNE_DEFAULTS["features"],
                        help="the store the head was fitted on (default: %(default)s)")
    parser.add_argument("--head", default=FINE_TUNE_DEFAULTS["head"],
                        help="head directory written by fit-head (default: %(default)s)")
    parser.add_argument("-o", "--output-dir", metavar="DIR",
                        help="where the fine-tuned model goes (default: finetuned/ beside "
                             "the head); the checkpoint is kept in DIR.checkpoint/ until done")
    parser.add_argument("--unfreeze", metavar="PREFIX",
                        help="train the backbone from the first layer whose name starts with "
                             "PREFIX to the top (default for VGG: block5, i.e. block5_conv1 "
                             "to fc2); needed for other keras.applications backbones. "
                             "KerasHub presets: blocks:N, the top N transformer blocks and "
                             "every weight above them (default: blocks:2)")
    parser.add_argument("--images", metavar="DIR",
                        help="the image folder, if it moved since extraction (default: the "
                             "folder recorded in the store); files are checked by sha256")
    for name, metavar, text in (
            ("epochs", "N", "at most this many epochs"),
            ("patience", "N", "stop after this many epochs without a lower validation loss"),
            ("learning_rate", "LR", "Adam's learning rate"),
            ("batch_size", "N", "images per step"),
            ("seed", "N", "decides the order and the augmentation")):
        parser.add_argument("--" + name.replace("_", "-"),
                            type=argument_type(FINE_TUNE_OPTIONS[name]),
                            default=FINE_TUNE_DEFAULTS[name], metavar=metavar,
                            help=f"{text} (default: %(default)s)")
    _add_export_options(parser)
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bar or epoch lines on stderr")
    return parser


def _fine_tune(args: argparse.Namespace) -> int:
    from headstart.classify.finetune import checkpoint_dir, fine_tune, format_comparison

    result = fine_tune(args.features, args.head, out_dir=args.output_dir,
                       unfreeze=args.unfreeze, images=args.images, epochs=args.epochs,
                       patience=args.patience, learning_rate=args.learning_rate,
                       batch_size=args.batch_size, seed=args.seed, weights_path=args.weights,
                       preset=args.backbone, tflite=args.tflite, quantize=args.quantize,
                       progress=not args.quiet, log=None if args.quiet else _stderr)
    metrics = result.metrics
    selection = metrics["selection"]
    print(f"fine-tuned {metrics['pipeline']['model']} from {metrics['head']} "
          f"(unfrozen {metrics['parameters']['unfrozen'][0]} ... "
          f"{metrics['parameters']['unfrozen'][-1]}; trainable "
          f"{metrics['parameters']['trainable']:,}, frozen "
          f"{metrics['parameters']['non_trainable']:,}); best epoch {selection['best_epoch']} "
          f"of {selection['epochs_run']}" + (", resumed" if result.resumed_after else "") + "\n")
    print(format_comparison(metrics))
    print(f"\nsaved (model.keras, saved_model/, labels.txt, metrics.json): {result.out_dir}/")
    if result.already_done:
        print(f"(already done earlier; delete {result.out_dir}/ to fine-tune again)")
    elif checkpoint_dir(result.out_dir).exists():
        print(f"(the checkpoint {checkpoint_dir(result.out_dir)}/ could not be removed)")
    return 0


def fine_tune_main(argv: list[str] | None = None) -> int:
    return run_command(fine_tune_parser(), _fine_tune, argv)
