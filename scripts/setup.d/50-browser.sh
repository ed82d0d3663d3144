# The page's browser tests (tests/browser): Debian's headless Chromium and its driver,
# and selenium with pytest in a venv under $IMAGEFACTORY_SERVICES/browser. Sourced by
# scripts/setup.sh.
apt_need chromium chromium-driver
py_venv browser "pytest" selenium pytest
