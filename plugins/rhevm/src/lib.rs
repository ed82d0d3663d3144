//! RHEV-M cloud plugin: qcow2 target images with an OVF, laid out in an NFS export storage domain (work in progress).
