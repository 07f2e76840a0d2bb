#!/usr/bin/env bash
# The NLCEN study of issue 15 on JSRT at 128 x 128, as run for bundles/nlcen/docs/README.md ("Strong attacks and
# the full protocol"): three seeds of NLCEN and of NLCEN w/o NLCE, one U-Net; targeted I-FGSM at all 18 budgets on
# all 123 test images (shared sweep) for NLCEN and the U-Net; the worst-case ensemble on the first 24 test images.
# Two jobs side by side, one thread each (the 2-core machine); every step skips what is already done and resumes a
# killed run, so the script can simply be run again. Usage: bash scripts/nlcen_strong_attack_study.sh DATASET_DIR
set -euo pipefail
DATA=${1:-../shared/datasets/jsrt_scr_224}
export OMP_NUM_THREADS=1
STUDY=(python scripts/nlcen_robustness_study.py --dataset_dir "$DATA" --work_dir bundles/nlcen/study/s128
       --spatial_size "[128,128]" --pgd_epsilons "[]" --ensemble_steps 20 --ensemble_images 24)
ALL_BUDGETS="[0,0.5,1,2,4,6,8,10,12,14,16,18,20,22,24,26,28,30,32]"

job_a() {  # NLCEN: three seeds
    "${STUDY[@]}" --variants "[nlcen]" --seeds "[0,1,2]" --epochs 30 --epsilons "[]"
    "${STUDY[@]}" --variants "[nlcen]" --epochs 30 --epsilons "$ALL_BUDGETS" --ensemble_epsilons "[0,2,4,8]"
    "${STUDY[@]}" --variants "[nlcen_seed1,nlcen_seed2]" --epochs 30 --epsilons "[0,4,8,16]" --ensemble_epsilons "[0,4]"
}

job_b() {  # the U-Net, then NLCEN w/o NLCE: three seeds; then the ensemble's step check on NLCEN (8 images)
    "${STUDY[@]}" --variants "[unet]" --epochs 60 --epsilons "$ALL_BUDGETS" --ensemble_epsilons "[0,2,4,8]"
    "${STUDY[@]}" --variants "[nlcen_wo_nlce]" --seeds "[0,1,2]" --epochs 30 --epsilons "[]"
    "${STUDY[@]}" --variants "[nlcen_wo_nlce]" --epochs 30 --epsilons "[0,4,8,16]" --ensemble_epsilons "[0,2,4,8]"
    "${STUDY[@]}" --variants "[nlcen_wo_nlce_seed1,nlcen_wo_nlce_seed2]" --epochs 30 --epsilons "[0,4,8,16]" \
        --ensemble_epsilons "[0,4]"
    for steps in 20 100; do
        python -m monai_ext robustness --bundle bundles/nlcen --dataset_dir "$DATA" --spatial_size "[128,128]" \
            --ckpt_path bundles/nlcen/study/s128/nlcen/models/model.pt --attacks "[ensemble]" --epsilons "[0,4]" \
            --num_steps "$steps" --max_images 8 --output_dir "bundles/nlcen/study/s128/nlcen/eval/ensemble${steps}_8images"
    done
}

job_a > logs/strong_a.log 2>&1 &
job_b > logs/strong_b.log 2>&1 &
wait
# gather every network into one table, figure and JSON (nothing is recomputed)
"${STUDY[@]}" --variants "[nlcen,nlcen_seed1,nlcen_seed2,nlcen_wo_nlce,nlcen_wo_nlce_seed1,nlcen_wo_nlce_seed2,unet]" \
    --epochs 30 --epsilons "$ALL_BUDGETS" --ensemble_epsilons "[0,2,4,8]"
