#!/usr/bin/env bash
# The model zoo's spleen_ct_segmentation bundle, as published (no weights, not a line changed), trained from scratch
# on the left-atrium MRI volumes of la2018_mri with its documented `monai.bundle run` and the command-line overrides
# an MRI user needs, then its robustness table from `python -m monai_ext robustness --bundle`. The bundle is copied
# to WORK_DIR first (its outputs go beside its configs, as the zoo's bundle_root "." does); the shared copy stays as
# it is. Every step is a plain command that can be run again: `--overwrite False` resumes the robustness table.
# Usage: bash scripts/zoo_spleen_on_la2018.sh [DATASET_DIR] [WORK_DIR] [EPOCHS]
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
DATA_REL=${1:-../shared/datasets/la2018_mri}  # as given, relative to the repository: the result files name it
DATA=$(cd "$REPO" && cd "$DATA_REL" && pwd)
WORK=${2:-$REPO/bundles/robust3d/study/zoo_spleen}
EPOCHS=${3:-40}
mkdir -p "$(dirname "$WORK")"
[ -d "$WORK/configs" ] || cp -r "$REPO/../shared/zoo/spleen_ct_segmentation" "$WORK"
cd "$WORK"

# MRI, not CT: the intensity window is the 8-bit range of these volumes (the zoo's -57..164 HU window would clip
# them), the spacing 1.25 mm isotropic (the volumes are 0.625 mm; the zoo's 1.5 x 1.5 x 2.0 mm CT grid would leave
# 28 slices), patches of 64 x 64 x 32 (the zoo's 96^3 patch is larger than a resampled volume's 44 slices), and the
# sizes of a 2-core CPU (fewer epochs, no worker processes).
MRI=(
    --dataset_dir "$DATA"
    --train#deterministic_transforms#3#pixdim "[1.25,1.25,1.25]"
    --train#deterministic_transforms#4#a_min 0 --train#deterministic_transforms#4#a_max 255
    --train#random_transforms#0#spatial_size "[64,64,32]"
    --validate#inferer#roi_size "[64,64,32]"
    --train#dataset#num_workers 2 --train#dataloader#num_workers 0 --validate#dataloader#num_workers 0
)
[ -f models/model.pt ] || python -m monai.bundle run --config_file configs/train.json "${MRI[@]}" --epochs "$EPOCHS"

# robustness through the bundle's own network, preprocessing and sliding-window inferer, on la2018_mri's test split
cd "$REPO"
python -m monai_ext robustness --bundle "$WORK" --dataset_dir "$DATA_REL" \
    --train#deterministic_transforms#3#pixdim "[1.25,1.25,1.25]" \
    --train#deterministic_transforms#4#a_min 0 --train#deterministic_transforms#4#a_max 255 \
    --validate#inferer#roi_size "[64,64,32]" \
    --attacks "${ATTACKS:-[fgsm,pgd,segpgd,cospgd]}" --epsilons "[0,2,4,8]" --num_steps "${STEPS:-10}" \
    --max_images "${IMAGES:-20}" --output_dir "$WORK/eval/attack_benchmark"
# the files the docs cite (weights are not committed: the table names the file and digest it evaluated)
RESULTS=bundles/robust3d/docs/results/zoo_spleen
mkdir -p "$RESULTS"
cp -r "$WORK"/eval/attack_benchmark/* "$RESULTS"/
python scripts/training_curve.py "$WORK/eval" "$RESULTS/training" --title "zoo spleen_ct_segmentation on la2018_mri"
