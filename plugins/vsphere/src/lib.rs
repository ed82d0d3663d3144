//! vSphere cloud plugin: streamOptimized VMDK or OVA target images registered through the vSphere API (work in progress).
