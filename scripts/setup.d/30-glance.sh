# Glance (the OpenStack Image service) for the OpenStack plugin's tests: PyPI's glance and
# gunicorn in a venv at a fixed place; the tests run its WSGI app on loopback with sqlite
# and no Keystone. Sourced by scripts/setup.sh.
py_venv glance-venv "gunicorn glance-manage" glance gunicorn
