//! Fedora OS plugin: installs Fedora in a VM from a generated kickstart (work in progress).
