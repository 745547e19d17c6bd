"""audit-features: parse arguments, audit, write the report, print a summary.

Exit status as in every headstart command (headstart.errors): 0 success (whatever was
found); 2 bad input (one sentence on stderr: what went wrong, which file, what to do);
3 the store is busy; 4 disk full or I/O error.
"""

from __future__ import annotations

import argparse

from headstart.audit.options import DEFAULTS, OPTIONS
from headstart.cli import run_command
from headstart.options import argument_type


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="audit-features",
        description="Audit a feature store with the split fit-head uses: files with the same "
                    "bytes under different labels, near duplicates and leakage across "
                    "splits, likely label errors and outliers. Writes report.html (one "
                    "self-contained page), issues.csv and audit.json; changes no file.")
    p.add_argument("--features", metavar="STORE", default=DEFAULTS["features"],
                   help="feature store written by extract-features (default: %(default)s)")
    p.add_argument("-o", "--output-dir", metavar="DIR", default="audit",
                   help="where report.html, issues.csv and audit.json go (default: %(default)s)")
    p.add_argument("--seed", type=int, metavar="N", default=DEFAULTS["seed"],
                   help="the split's seed, as for fit-head (default: %(default)s)")
    p.add_argument("--split", metavar="RULE", default=DEFAULTS["split"],
                   help="the split rule, as for fit-head: auto, given, hash or TRAIN/VAL/TEST "
                        "percentages (default: %(default)s)")
    p.add_argument("--head", metavar="HEAD_DIR",
                   help="a head from fit-head (e.g. heads/logreg): report its test accuracy on "
                        "all test images and on those without a copy in train or "
                        "validation")
    p.add_argument("-k", type=argument_type(OPTIONS["k"]), metavar="K",
                   default=DEFAULTS["k"],
                   help="nearest neighbours per image, found once and used by every check "
                        "(default: %(default)s)")
    p.add_argument("--folds", type=argument_type(OPTIONS["folds"]), metavar="N",
                   default=DEFAULTS["folds"],
                   help="out-of-fold heads for the label check (default: %(default)s)")
    p.add_argument("--C", dest="C", type=argument_type(OPTIONS["C"]), metavar="C",
                   default=DEFAULTS["C"],
                   help="the logreg heads' fixed inverse regularisation strength "
                        "(default: %(default)g)")
    p.add_argument("--neighbours", choices=OPTIONS["neighbours"].values,
                   default=DEFAULTS["neighbours_method"],
                   help="exact, faiss (needs headstart[faiss]) or auto: exact up to 100,000 "
                        "images, faiss above (default: %(default)s)")
    p.add_argument("--max-shown", type=argument_type(OPTIONS["max_shown"]), metavar="N",
                   default=DEFAULTS["max_shown"],
                   help="groups or images shown per report section; issues.csv has all "
                        "(default: %(default)s)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    return p


def _audit(args: argparse.Namespace) -> int:
    from headstart.audit.issues import collect, counts
    from headstart.audit.report import plural
    from headstart.audit.run import audit_store
    from headstart.audit.write import check_output_dir, write_audit

    out = check_output_dir(args.output_dir)
    result = audit_store(args.features, seed=args.seed, split=args.split, head=args.head,
                         k=args.k, folds=args.folds, C=args.C,
                         neighbours_method=args.neighbours, quiet=args.quiet)
    paths = write_audit(result, out, max_shown=args.max_shown)
    c = counts(result, collect(result))
    leaky = c["leak"]["test_images_with_a_copy_in_train_or_validation"]
    lines = [
        f"{result.source}: {len(result.labels):,} images audited in "
        f"{result.seconds['total']:.1f} s",
        f"  same bytes, different labels   {plural(c['conflict']['groups'], 'group')}, "
        f"{plural(c['conflict']['images'], 'image')}",
        f"  copies across splits           {plural(c['leak']['groups'], 'group')}, "
        f"{plural(c['leak']['images'], 'image')} ({plural(leaky, 'test image')} with a copy in "
        "train or validation)",
        f"  copies within a split          {plural(c['duplicate']['groups'], 'group')}, "
        f"{plural(c['duplicate']['images'], 'image')}",
        f"  likely label errors            {plural(c['label']['images'], 'image')}",
        f"  outliers                       {plural(c['outlier']['images'], 'image')}",
    ]
    if result.head:
        h = result.head
        lines.append(f"  head test accuracy             {100 * h['all_test']['accuracy']:.2f}% "
                     f"on all {h['all_test']['n']:,} test images, "
                     + (f"{100 * h['leak_free_test']['accuracy']:.2f}%"
                        if h['leak_free_test']['n'] else "-")
                     + f" on the {h['leak_free_test']['n']:,} without a copy in train or "
                       "validation")
    lines.append(f"written: {paths['report']} (open it in a browser), {paths['issues']}, "
                 f"{paths['record']}")
    print("\n".join(lines))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(parser(), _audit, argv)
