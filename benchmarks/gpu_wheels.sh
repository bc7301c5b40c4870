#!/usr/bin/env bash
# Downloads, here, the wheels crackseg needs beyond what a lent GPU machine holds
# (its Python 3.12 has torch, Lightning, scikit-image, tifffile, h5py, pandas, but not
# MONAI, Zarr, cc3d, edt or jsonargparse) into .whl/, which git ignores.
# Then run benchmarks/gpu_device.sh there, carrying .whl (see that script).
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
         manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp "${platforms[@]}" -d .whl \
  monai==1.6.1 zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0 \
  connected-components-3d==4.1.1 edt==3.1.2 jsonargparse==4.53.0 typeshed-client==2.15.0 \
  docstring-parser==0.18.0
du -sh .whl
