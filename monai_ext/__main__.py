"""
Command-line entry point of ``monai_ext`` (python-fire): ``python -m monai_ext report bundles/nlcen [--output_dir DIR]
[--eval_dir DIR] [--runs_dir DIR] [--predictions_dir DIR] [--dataset_dir DIR] ...``; ``python -m monai_ext report
--help`` lists the options. A missing folder ends with a one-line error and exit status 1.
"""

from __future__ import annotations

import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    """Run the fire command line over ``argv`` (``sys.argv[1:]`` by default)."""
    import fire

    from monai_ext.report import build_report

    try:
        fire.Fire({"report": build_report}, command=argv)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
