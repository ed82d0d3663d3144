//! EC2 cloud plugin: raw target images pushed as EBS snapshots and registered AMIs (work in progress).
