# The SBOM tests validate every image's SPDX document with a real SPDX validator:
# pyspdxtools from the spdx-tools PyPI package, in a venv under
# $IMAGEFACTORY_SERVICES/spdx. Sourced by scripts/setup.sh.
py_venv spdx "pyspdxtools" spdx-tools
