# PostgreSQL for the farm store (image_manager "postgres") and its tests: Debian's server
# package. The tests make private clusters of their own (plugins/testkit/src/postgres.rs:
# initdb in a temp dir, a free loopback port, run as the package's `postgres` user when
# the tests run as root); the package's own cluster is not used. Sourced by scripts/setup.sh.
apt_need postgresql
