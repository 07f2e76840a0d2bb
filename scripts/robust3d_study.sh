#!/usr/bin/env bash
# The 3D study of bundles/robust3d on la2018_mri (issue 20), as run for bundles/robust3d/docs/README.md: the 3D UNet
# (train.json), its PGD twin and its NLCE twin, each evaluated on the 20 test volumes (Dice, Jaccard, HD95 in mm) and
# attacked through the bundle's sliding window at full resolution. CPU sizes (2 cores, no GPU) are the defaults below:
# the twins are fine-tuned from the UNet for TWIN_EPOCHS epochs (PGD: 2 steps) instead of trained from scratch, the
# attacks run STEPS steps on the first IMAGES test volumes. A GPU user trains the twins from scratch (leave out
# --init_ckpt, EPOCHS as the UNet) and raises STEPS to 20 (BMVC 2024's setting) and IMAGES to 20. Every step skips
# what is already done (a trained model) or resumes (a sweep).
# Usage: bash scripts/robust3d_study.sh [DATASET_DIR]
set -euo pipefail
DATA=${1:-../shared/datasets/la2018_mri}
C=bundles/robust3d/configs
M=bundles/robust3d/models
RESULTS=bundles/robust3d/docs/results
EPOCHS=${EPOCHS:-60}
TWIN_EPOCHS=${TWIN_EPOCHS:-2}
STEPS=${STEPS:-5}
IMAGES=${IMAGES:-4}
NLCE=(--network_def#_target_ monai_ext.networks.nets.NLCEUNet --network_def#num_codes 32)

unet() {  # the 3D UNet, its clean test scores and its robustness table
[ -f $M/model.pt ] || python -m monai.bundle run --config_file $C/train.json --dataset_dir "$DATA" --epochs "$EPOCHS"
python -m monai.bundle run --config_file "['$C/train.json','$C/evaluate.json']" --dataset_dir "$DATA" \
    --eval_dir "$RESULTS/unet_clean"
python -m monai_ext robustness --bundle bundles/robust3d --dataset_dir "$DATA" \
    --attacks "[fgsm,pgd,segpgd,cospgd,apgd,vafa]" --epsilons "[0,2,4,8]" --num_steps "$STEPS" \
    --max_images "$IMAGES" --output_dir "$RESULTS/unet_attacks"
}

twins() {  # online PGD training (eps 4 levels, 2 steps) and the UNet with an NLCE block, from the UNet's weights
[ -f $M/pgd_training/model.pt ] || python -m monai.bundle run --config_file "['$C/train.json','$C/train_pgd.json']" \
    --dataset_dir "$DATA" --init_ckpt $M/model.pt --epochs "$TWIN_EPOCHS" --pgd_train_steps 2
[ -f $M/nlce/model.pt ] || python -m monai.bundle run --config_file "['$C/train.json','$C/train_nlce.json']" \
    --dataset_dir "$DATA" --init_ckpt $M/model.pt --epochs "$TWIN_EPOCHS"
python -m monai.bundle run --config_file "['$C/train.json','$C/train_pgd.json','$C/evaluate.json']" \
    --dataset_dir "$DATA" --eval_dir "$RESULTS/pgd_clean"
python -m monai.bundle run --config_file "['$C/train.json','$C/train_nlce.json','$C/evaluate.json']" \
    --dataset_dir "$DATA" --eval_dir "$RESULTS/nlce_clean"
python -m monai_ext robustness --bundle bundles/robust3d --dataset_dir "$DATA" --ckpt_path $M/pgd_training/model.pt \
    --attacks "[fgsm,pgd]" --epsilons "[0,2,4,8]" --num_steps "$STEPS" --max_images "$IMAGES" \
    --output_dir "$RESULTS/pgd_attacks"
python -m monai_ext robustness --bundle bundles/robust3d --dataset_dir "$DATA" --ckpt_path $M/nlce/model.pt "${NLCE[@]}" \
    --attacks "[fgsm,pgd]" --epsilons "[0,2,4,8]" --num_steps "$STEPS" --max_images "$IMAGES" \
    --output_dir "$RESULTS/nlce_attacks"
}

# the UNet must be trained first; then its attacks and the twins run side by side (one thread each: 2 cores)
[ -f $M/model.pt ] || python -m monai.bundle run --config_file $C/train.json --dataset_dir "$DATA" --epochs "$EPOCHS"
mkdir -p logs
OMP_NUM_THREADS=1 unet > logs/robust3d_unet.log 2>&1 &
OMP_NUM_THREADS=1 twins > logs/robust3d_twins.log 2>&1 &
wait
