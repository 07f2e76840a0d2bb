#!/usr/bin/env bash
# Issue 21, item 3 at CPU size: the NLCEN study's networks (JSRT at 128 x 128, seed 0, trained by
# scripts/nlcen_robustness_study.py into bundles/nlcen/study/s128) under the "sea" preset (SEA's three APGD losses,
# 300 steps each, worst by pixel accuracy, as SEA reports) beside the 20-step broad ensemble, on the first IMAGES test
# images at EPSILONS. ATTACKS="sea,sea_dice" adds the same attacks' worst by Dice (run again: twice the time). The full
# protocol (3 seeds, 48+ images, eps 2/4/8) is the same command with IMAGES=48 EPSILONS="[0,2,4,8]" and more variants:
# about 900 passes per image and budget, a GPU's job.
# Usage: [IMAGES=4] [EPSILONS="[0,4]"] [VARIANTS="nlcen unet nlcen_wo_nlce"] [ATTACKS=sea] [RESULTS=folder] \
#     bash scripts/nlcen_sea_study.sh [DATASET_DIR]
set -euo pipefail
DATA=${1:-../shared/datasets/jsrt_scr_224}
IMAGES=${IMAGES:-4}
EPSILONS=${EPSILONS:-"[0,4]"}
STUDY=bundles/nlcen/study/s128
RESULTS=${RESULTS:-bundles/nlcen/docs/results/sea_s128}
UNET='{"_target_": "monai.networks.nets.UNet", "spatial_dims": 2, "in_channels": "@in_channels", "out_channels": "@num_classes", "channels": [16, 32, 64, 128, 256], "strides": [2, 2, 2, 2], "num_res_units": 2}'
for variant in ${VARIANTS:-nlcen unet nlcen_wo_nlce}; do
    case $variant in
        nlcen) network=() ;;
        nlcen_wo_nlce) network=(--network_def#use_nlce False) ;;
        unet) network=(--network_def "$UNET") ;;
    esac
    for run in "ensemble 20" "${ATTACKS:-sea} 300"; do
        set -- $run
        python -m monai_ext robustness --bundle bundles/nlcen --dataset_dir "$DATA" --spatial_size "[128,128]" \
            --ckpt_path "$STUDY/$variant/models/model.pt" "${network[@]}" --attacks "[$1]" --num_steps "$2" \
            --epsilons "$EPSILONS" --max_images "$IMAGES" --output_dir "$RESULTS/$variant/${1//,/_}$2"
    done
done
