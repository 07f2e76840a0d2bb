#!/usr/bin/env bash
# The 3D study of bundles/robust3d on la2018_mri (issue 20), as run for bundles/robust3d/docs/README.md: train the
# 3D UNet, evaluate it on the 20 test volumes (Dice, Jaccard, HD95 in mm), then its robustness table through the
# bundle's sliding window at full resolution. CPU sizes (2 cores, no GPU) are the defaults below; a GPU user raises
# STEPS to 20 (BMVC 2024's setting) and IMAGES to 20. Every step resumes or skips what is already done.
# Usage: bash scripts/robust3d_study.sh [DATASET_DIR]
set -euo pipefail
DATA=${1:-../shared/datasets/la2018_mri}
C=bundles/robust3d/configs
RESULTS=bundles/robust3d/docs/results
EPOCHS=${EPOCHS:-60}
STEPS=${STEPS:-5}
IMAGES=${IMAGES:-4}

[ -f bundles/robust3d/models/model.pt ] || \
    python -m monai.bundle run --config_file $C/train.json --dataset_dir "$DATA" --epochs "$EPOCHS"
python -m monai.bundle run --config_file "['$C/train.json','$C/evaluate.json']" --dataset_dir "$DATA" \
    --eval_dir "$RESULTS/unet_clean"
python -m monai_ext robustness --bundle bundles/robust3d --dataset_dir "$DATA" \
    --attacks "[fgsm,pgd,segpgd,cospgd,apgd,vafa]" --epsilons "[0,2,4,8]" --num_steps "$STEPS" \
    --max_images "$IMAGES" --output_dir "$RESULTS/unet_attacks"
