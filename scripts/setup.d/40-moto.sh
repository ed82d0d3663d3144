# moto (a local AWS EC2/EBS/S3 API server) for the EC2 plugin's tests and benchmark:
# PyPI's moto[server] in a venv at a fixed place; the tests start `moto_server` on a
# loopback port with the default AMIs off. Sourced by scripts/setup.sh.
py_venv moto-venv "moto_server" 'moto[server]'
