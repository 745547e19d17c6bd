"""fit-head and predict: parse arguments, call the library by keyword, print, set the status.

Exit status as in every headstart command (headstart.errors): 0 success; 1 a head's test
accuracy is below --assert-min-accuracy; 2 bad input (one sentence on stderr: what went
wrong, which file, what to do); 3 the store is busy; 4 disk full or I/O error.
"""

from __future__ import annotations

import argparse
import sys

from headstart.classify.exclude import ISSUE_KINDS
from headstart.classify.options import (
    CLASS_WEIGHTS,
    DEFAULT_CS,
    FIT_DEFAULTS,
    HEADS,
    LOGREG_OPTIONS,
    SOFTMAX_DEFAULTS,
    SOFTMAX_OPTIONS,
)
from headstart.classify.persist import load_head
from headstart.classify.predict import (
    check_output,
    format_predictions,
    predict_images,
    predict_store,
    write_predictions,
)
from headstart.cli import run_command
from headstart.errors import EXIT_CHECK_FAILED, ClassifyError
from headstart.options import Range, argument_type, default_of
from headstart.words import not_images, shown

BOTH = "both"


# ----------------------------------------------------------------------------- fit-head

def fit_head_parser() -> argparse.ArgumentParser:
    """Built from declarations only (headstart.classify.options): no scikit-learn, Keras or
    TensorFlow is imported before the arguments are checked."""
    soft = argparse.Namespace(**SOFTMAX_DEFAULTS)
    parser = argparse.ArgumentParser(
        prog="fit-head",
        description="Fit a classifier head on stored VGG16 features, choose its settings on the "
                    "validation split, report it once on the test split, and save it.")
    parser.add_argument("--features", metavar="STORE", default=FIT_DEFAULTS["features"],
                        help="feature store written by extract-features (default: %(default)s)")
    parser.add_argument("--model", choices=(*HEADS, BOTH),
                        default=FIT_DEFAULTS["models"][0],
                        help="which head to fit; 'both' fits each on the same split and prints "
                             "them side by side (default: %(default)s)")
    parser.add_argument("-o", "--output-dir", metavar="DIR",
                        default=FIT_DEFAULTS["out_dir"],
                        help="each head goes to DIR/<model>/ (default: %(default)s)")
    parser.add_argument("--seed", type=int, metavar="N", default=FIT_DEFAULTS["seed"],
                        help="decides the split and the softmax initialisation "
                             "(default: %(default)s)")
    parser.add_argument("--split", metavar="RULE", default=FIT_DEFAULTS["split"],
                        help="'auto': the train/validation/test folders' split when the store "
                             "was extracted from such folders, else 'hash'; 'given': the "
                             "folders' split; 'hash': 70/15/15 by image content; or "
                             "TRAIN/VAL/TEST percentages for the hash rule, e.g. 80/10/10 "
                             "(default: %(default)s)")
    parser.add_argument("--class-weight", choices=CLASS_WEIGHTS,
                        default=FIT_DEFAULTS["class_weight"],
                        help="'balanced' weights each class inversely to its frequency "
                             "(default: %(default)s)")
    parser.add_argument("--assert-min-accuracy", type=argument_type(Range(float, 0, 1)),
                        metavar="X",
                        help="exit with status 1 if a head's test accuracy is below X (0..1)")
    parser.add_argument("--exclude", metavar="ISSUES_CSV",
                        help="leave the images flagged in this issues.csv (from audit-features) "
                             "out of train and validation; the test split stays unchanged, so "
                             "test accuracy compares with a fit without it")
    parser.add_argument("--exclude-kinds", metavar="KINDS",
                        help="with --exclude, only these comma-separated kinds: "
                             f"{','.join(ISSUE_KINDS)} (default: all)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--memory", metavar="SIZE",
                        help="what the rows, their statistics and the model may take, e.g. "
                             "1500M or 4G; a store that needs more is read from its file in "
                             "blocks (default: half of the memory available)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    logreg = parser.add_argument_group("logreg")
    logreg.add_argument("--C", type=argument_type(LOGREG_OPTIONS["C"]), dest="C",
                        help="fix the inverse regularisation strength instead of choosing it on "
                             f"validation from {', '.join(f'{c:g}' for c in DEFAULT_CS)}")
    softmax = parser.add_argument_group("softmax")
    softmax.add_argument("--hidden-units", type=_typed("hidden_units"), metavar="N",
                         help="add one ReLU hidden layer of this size "
                              f"(default: {soft.hidden_units}, none)")
    softmax.add_argument("--dropout", type=_typed("dropout"), metavar="RATE",
                         help=f"dropout rate before the output layer (default: {soft.dropout})")
    softmax.add_argument("--epochs", type=_typed("epochs"), metavar="N",
                         help=f"at most this many epochs (default: {soft.epochs})")
    softmax.add_argument("--patience", type=_typed("patience"), metavar="N",
                         help="stop after this many epochs without a lower validation loss "
                              f"(default: {soft.patience})")
    softmax.add_argument("--batch-size", type=_typed("batch_size"), metavar="N",
                         help=f"images per step (default: {soft.batch_size})")
    softmax.add_argument("--learning-rate", type=_typed("learning_rate"), metavar="LR",
                         help=f"Adam's learning rate (default: {soft.learning_rate:g})")
    return parser


def _typed(name: str):
    """argparse type for a softmax option, from the head's declaration (one source)."""
    return argument_type(SOFTMAX_OPTIONS[name])


def _fit(args: argparse.Namespace) -> int:
    from headstart.classify import report
    from headstart.classify.fit import fit_heads

    if args.exclude_kinds is not None and args.exclude is None:
        raise ClassifyError("--exclude-kinds needs --exclude ISSUES_CSV, the file whose flagged "
                            "images to leave out.")
    models = HEADS if args.model == BOTH else (args.model,)
    log = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    results = fit_heads(
        args.features, models=models, out_dir=args.output_dir, seed=args.seed,
        split=args.split, class_weight=args.class_weight,
        plots=not args.no_plots, log=log, exclude=args.exclude,
        exclude_kinds=args.exclude_kinds, memory=args.memory, C=args.C,
        hidden_units=args.hidden_units,
        dropout=args.dropout, epochs=args.epochs, patience=args.patience,
        batch_size=args.batch_size, learning_rate=args.learning_rate, verbose=not args.quiet)
    metrics = [r.metrics for r in results]
    print(report.format_header(metrics[0]) + "\n")
    print(report.format_summary(metrics))
    for result in results:
        print("\n" + report.format_details(result.metrics))
    plots = "" if args.no_plots else ", plots"
    print(f"\nsaved (head, metrics.json, split.csv, test_predictions.csv{plots}):")
    for result in results:
        print(f"  {result.out_dir}/")
    if args.assert_min_accuracy is not None:
        below = [r for r in results if r.test_accuracy < args.assert_min_accuracy]
        for r in below:
            print(f"fit-head: the {r.model} head's test accuracy {report.percent(r.test_accuracy)} "
                  f"is below --assert-min-accuracy {report.percent(args.assert_min_accuracy)}.",
                  file=sys.stderr)
        if below:
            return EXIT_CHECK_FAILED
    return 0


def fit_head_main(argv: list[str] | None = None) -> int:
    return run_command(fit_head_parser(), _fit, argv)


# ------------------------------------------------------------------------------ predict

def predict_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="predict",
        description="Class and probability of new images with a head from fit-head, through "
                    "the same extraction pipeline as its training images.")
    parser.add_argument("--head", required=True, help="head directory written by fit-head, "
                                                      "e.g. heads/logreg")
    parser.add_argument("inputs", nargs="*", metavar="IMAGE_OR_DIR",
                        help="image files, or folders searched recursively for images")
    parser.add_argument("--features", metavar="STORE",
                        help="predict the rows of this feature store instead of images")
    parser.add_argument("--top-k", type=argument_type(Range(int, 1)), default=3, metavar="K",
                        help="also show the k most probable classes (default: %(default)s)")
    parser.add_argument("--output", metavar="FILE",
                        help="also write every prediction to FILE (.csv or .json)")
    parser.add_argument("--batch-size", type=argument_type(Range(int, 1)), metavar="N",
                        default=default_of(predict_images, "batch_size"),
                        help="images per backbone batch (default: %(default)s)")
    add_moved_backbone_options(parser)
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bar on stderr")
    return parser


def add_moved_backbone_options(parser: argparse.ArgumentParser) -> None:
    """--weights and --backbone: where the extraction's weights file or KerasHub preset
    is now, for the commands that rebuild a head's backbone (predict, export-head,
    fine-tune)."""
    parser.add_argument("--weights", metavar="PATH",
                        help="the weights file the store was extracted with, if it moved "
                             "(its sha256 must match the recorded one)")
    parser.add_argument("--backbone", metavar="PATH",
                        help="the KerasHub preset folder the store was extracted with, if "
                             "it moved (the sha256 of its weights and config must match)")


def _predict(args: argparse.Namespace) -> int:
    if bool(args.inputs) == bool(args.features):
        raise ClassifyError("Give images or folders to predict, or --features STORE, but not both.")
    if args.output:
        check_output(args.output)
    head = load_head(args.head)
    if args.features:
        predictions = predict_store(head, args.features)
    else:
        predictions = predict_images(head, args.inputs, batch_size=args.batch_size,
                                     weights_path=args.weights, preset=args.backbone,
                                     progress=not args.quiet)
    for path, reason in predictions.skipped:
        print(f"predict: skipped '{shown(path)}': {shown(reason)}", file=sys.stderr)
    if predictions.paths:
        print(format_predictions(predictions, top_k=args.top_k))
    if args.output:
        write_predictions(predictions, args.output, top_k=args.top_k)
    summary = f"predict: {len(predictions.paths):,} predicted, {len(predictions.skipped):,} skipped"
    if predictions.left_out:
        summary += f"; {not_images(predictions.left_out)}"
    if predictions.accuracy is not None:
        summary += f"; accuracy against the store's labels {100 * predictions.accuracy:.2f}%"
    print(summary + (f"; written to {args.output}" if args.output else "") + ".", file=sys.stderr)
    if not predictions.paths:
        raise ClassifyError("None of the given images could be read; see the skipped files above.")
    return 0


def predict_main(argv: list[str] | None = None) -> int:
    return run_command(predict_parser(), _predict, argv)
