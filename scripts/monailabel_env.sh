#!/usr/bin/env bash
# Build .venv-monailabel: a separate virtual environment with MONAI Label 0.8.5 and this project, for serving the
# bundles with MONAI Label's monaibundle app and for tests/test_monailabel.py (skipped without it). About 4.5 min and
# 3.4 GB on a 2-core machine; a second call returns at once while the environment works.
#
# Why not `pip install monailabel`: its declared dependencies pull sam2 (built from source) and torchvision, whose
# PyPI wheel is a CUDA build that fails to import against the CPU torch ("operator torchvision::nms does not exist");
# pydicom 3 breaks pydicom-seg 0.4.1 and pydicom 2 breaks dicomweb-client 0.61. So monailabel is installed with
# --no-deps, then the packages its server, the monaibundle app and the bundle tasks import, at the versions verified
# here (pip reports pydicom-seg's numpy<2 pin as a conflict: the bundle tasks never import pydicom-seg's numpy code).
#
# The one change outside this project: torchvision is left out, and the one line of monailabel/transform/post.py that
# imports torchvision.utils at import time (for an image-dump transform the bundle tasks never use) is turned into
# MONAI's optional_import, so the module imports without torchvision. The file's checksum is checked first: another
# monailabel build stops the script rather than being patched blindly.
#
# Usage: bash scripts/monailabel_env.sh [VENV_DIR]   (default .venv-monailabel, gitignored)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv-monailabel}"
if [ -x "$VENV/bin/monailabel" ] && "$VENV/bin/python" -c "import monailabel.tasks.infer.bundle" 2>/dev/null; then
    echo "monailabel env: $VENV is ready"
    exit 0
fi
python3 -m venv "$VENV"
PIP=("$VENV/bin/pip" install --quiet)
"${PIP[@]}" "torch==2.13.0" -e .
"${PIP[@]}" --no-deps "monailabel==0.8.5" "pydicom-seg==0.4.1"
"${PIP[@]}" \
    "fastapi==0.165.0" "uvicorn==0.54.0" "python-multipart==0.0.34" "pydantic==2.14.4" "pydantic-settings==2.16.3" \
    "python-dotenv==1.2.4" "expiring_dict==1.1.2" "pynrrd==1.1.3" "shapely==2.2.0" "watchdog==7.1.0" \
    "filelock==4.3.1" "requests==2.34.2" "requests-toolbelt==1.0.0" "schedule==1.2.2" "timeloop==1.0.2" \
    "cachetools==8.0.2" "google-auth==2.63.0" "girder-client==5.0.21" "psutil==7.2.2" "pyjwt==2.15.1" \
    "passlib==1.7.4" "SimpleITK==2.5.7" "pydicom==2.4.4" "dicomweb-client==0.59.3" "opencv-python-headless==5.0.0.93"

POST="$("$VENV/bin/python" -c "import importlib.util as u; print(u.find_spec('monailabel').submodule_search_locations[0])")/transform/post.py"
echo "9b92d169c044750da6d547120755a560491d269a0f0997f4d18907439546cb7e  $POST" | sha256sum --check --quiet
OPTIONAL='from monai.utils import optional_import; make_grid, save_image = (optional_import("torchvision.utils", name=n)[0] for n in ("make_grid", "save_image"))  # noqa'
sed -i "s/^from torchvision.utils import make_grid, save_image\$/$OPTIONAL/" "$POST"
"$VENV/bin/python" -c "import monailabel.tasks.infer.bundle, monailabel.tasks.train.bundle"
echo "monailabel env: $VENV built"
