//! RHEL-family OS plugin (RHEL, CentOS, Rocky, AlmaLinux): installs in a VM from a generated kickstart (work in progress).
