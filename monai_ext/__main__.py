"""
Command-line entry point of ``monai_ext`` (python-fire):

- ``python -m monai_ext report bundles/nlcen [--output_dir DIR] [--eval_dir DIR] [--runs_dir DIR]
  [--predictions_dir DIR] [--dataset_dir DIR] ...``: a bundle's results as a page;
- ``python -m monai_ext robustness --bundle DIR [--dataset_dir DIR] [--epsilons "[0,2,4,8]"]
  [--attacks "[ifgsm,pgd,segpgd,cospgd,ensemble]"] (or any of fgsm, apgd, vafa too) [--num_steps N] [--max_images N]
  [--attack_settings "{vafa: {q_max: 20}}"] [--figure_image N] [--figure_attack NAME] [--figure_epsilon E]
  [--ID VALUE ...]``: the trained network of any bundle in the model zoo's form (this project's or the zoo's, JSON or
  YAML, 2D or 3D through its sliding window) under the benchmark's attacks
  (:py:func:`monai_ext.engines.bundle_robustness`: Dice, Jaccard, HD95 in mm, per-image scores, run times, a figure of
  one image clean and attacked), with config overrides as on ``monai.bundle run``; printed as a Markdown table. Under
  ``torchrun --nproc_per_node N -m monai_ext robustness ...`` each process attacks its part of the images and rank 0
  writes and prints the one table.

``python -m monai_ext COMMAND --help`` lists a command's options. A wrong command line (an unknown command or option,
a missing argument), a missing folder, config or file, and a wrong option value (an unknown attack, a negative budget,
a split without labels, a results file of other settings) end with a one-line error and exit status 1.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    """Run the fire command line over ``argv`` (``sys.argv[1:]`` by default)."""
    import fire

    from monai_ext.engines import bundle_robustness
    from monai_ext.engines.attack_benchmark import markdown_table
    from monai_ext.report import build_report

    def show(result: object) -> object:
        """What the command prints: a robustness table as its Markdown (on rank 0 of ``torchrun``), anything else (a
        report's path) as is."""
        is_table = isinstance(result, dict) and {"attacks", "epsilons"} <= result.keys()
        if is_table and os.environ.get("RANK", "0") != "0":
            return None
        return markdown_table(result) if is_table else result

    if not logging.getLogger().handlers:  # progress of long commands (a sweep logs every batch)
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    argv = sys.argv[1:] if argv is None else list(argv)
    commands = {"report": build_report, "robustness": bundle_robustness}
    if {"-h", "--help"} & set(argv):  # help alone (fire would run the command first, or take --help for a config id)
        argv = [argv[0], "--", "--help"] if argv[0] in commands else ["--", "--help"]
    stderr, usage = sys.stderr, io.StringIO()
    try:
        with contextlib.redirect_stderr(usage):  # fire's usage text, shown for --help only; the commands keep stderr
            fire.Fire({k: _with_stderr(c, stderr) for k, c in commands.items()}, command=argv, serialize=show)
    except fire.core.FireExit as done:
        if done.code == 0:  # the help
            stderr.write(usage.getvalue())
            raise
        _fail(f"{done.trace.elements[-1].ErrorAsStr()} (python -m monai_ext COMMAND --help lists a command's options)")
    except (OSError, ValueError) as error:
        _fail(error)


def _with_stderr(command: Callable[..., Any], stderr: Any) -> Callable[..., Any]:
    """``command`` run with ``stderr`` as ``sys.stderr`` (its logs, warnings and progress), for fire (same signature and
    help)."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        with contextlib.redirect_stderr(stderr):
            return command(*args, **kwargs)

    return run


def _fail(error: object) -> NoReturn:
    """End with ``error`` on one line of stderr and exit status 1."""
    print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
    main()
