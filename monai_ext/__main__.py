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
  one image clean and attacked), with config overrides as on ``monai.bundle run``; printed as a Markdown table.

``python -m monai_ext COMMAND --help`` lists a command's options. A missing folder, config or file, and a wrong
option value (an unknown attack, a split without labels, a results file of other settings) end with a one-line error
and exit status 1.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    """Run the fire command line over ``argv`` (``sys.argv[1:]`` by default)."""
    import fire

    from monai_ext.engines import bundle_robustness
    from monai_ext.engines.attack_benchmark import markdown_table
    from monai_ext.report import build_report

    def show(result: object) -> object:
        """What the command prints: a robustness table as its Markdown, anything else (a report's path) as is."""
        is_table = isinstance(result, dict) and {"attacks", "epsilons"} <= result.keys()
        return markdown_table(result) if is_table else result

    if not logging.getLogger().handlers:  # progress of long commands (a sweep logs every batch)
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    try:
        fire.Fire({"report": build_report, "robustness": bundle_robustness}, command=argv, serialize=show)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
